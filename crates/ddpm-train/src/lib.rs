//! ddpm-train: datasets, configuration, the trainer (EMA, checkpoints, resume) and the `ddpm-train`
//! command line. Tracked in the trainer issue; this crate holds no code yet.
