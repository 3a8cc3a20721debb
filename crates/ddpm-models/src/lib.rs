//! ddpm-models: the denoising networks of ddpm-rs (U-Nets, Karras magnitude-preserving U-Nets, MLPs).
//! Their ports from denoising-diffusion-pytorch are tracked in the models issue; this crate holds
//! no network yet.
