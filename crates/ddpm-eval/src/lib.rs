//! ddpm-eval: FID, precision/recall, KID, FLD and NLL, and their command line. Tracked in the
//! evaluation issue; this crate holds no code yet.
