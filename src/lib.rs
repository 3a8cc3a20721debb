pub use ddpm_core as core;
