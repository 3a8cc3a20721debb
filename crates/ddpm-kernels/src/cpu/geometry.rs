//! The sizes of a convolution and the path it takes, shared by its im2col and Winograd forms.

/// The sizes of one convolution. `pad` is the padding before each spatial dimension; the output
/// size already accounts for the padding after it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConvGeometry {
    pub batch: usize,
    pub c_in: usize,
    pub height: usize,
    pub width: usize,
    pub c_out: usize,
    pub kernel: [usize; 2],
    pub stride: [usize; 2],
    pub pad: [usize; 2],
    pub dilation: [usize; 2],
    pub out: [usize; 2],
}

impl ConvGeometry {
    /// Patch length `C_in kh kw`.
    pub fn patch(&self) -> usize {
        self.c_in * self.kernel[0] * self.kernel[1]
    }

    /// Output pixels per image.
    pub fn out_pixels(&self) -> usize {
        self.out[0] * self.out[1]
    }

    /// Output pixels of the whole batch: the columns of the patch matrix.
    pub fn columns(&self) -> usize {
        self.batch * self.out_pixels()
    }

    /// Floating-point operations of one pass (forward, or either gradient): `2 C_out K P`.
    pub fn flops(&self) -> u64 {
        2 * (self.c_out * self.patch() * self.columns()) as u64
    }

    pub(crate) fn input_len(&self) -> usize {
        self.batch * self.c_in * self.height * self.width
    }

    pub(crate) fn output_len(&self) -> usize {
        self.batch * self.c_out * self.out_pixels()
    }

    /// For kernel offset `k` along dimension `d`: the output range whose input index is inside the
    /// image, and the input index of output 0 (may be negative).
    pub(crate) fn valid_range(&self, d: usize, k: usize) -> (usize, usize, isize) {
        let size = [self.height, self.width][d] as isize;
        let (s, p, dil, n_out) = (self.stride[d] as isize, self.pad[d] as isize, self.dilation[d] as isize, self.out[d] as isize);
        let first_in = k as isize * dil - p;
        // o is valid when 0 <= first_in + o s < size.
        let lo = if first_in >= 0 { 0 } else { (-first_in + s - 1) / s };
        let hi = if first_in >= size { 0 } else { ((size - 1 - first_in) / s + 1).min(n_out) };
        (lo.min(n_out) as usize, hi.max(lo.min(n_out)) as usize, first_in)
    }
}

/// [`ConvGeometry::valid_range`] of every kernel tap, computed once per call: the per-row loops of
/// im2col and col2im over small images otherwise spend much of their time in its divisions.
pub(crate) struct Taps {
    rows: Vec<(usize, usize, isize)>,
    cols: Vec<(usize, usize, isize)>,
}

impl Taps {
    pub(crate) fn new(g: &ConvGeometry) -> Self {
        Self { rows: (0..g.kernel[0]).map(|k| g.valid_range(0, k)).collect(), cols: (0..g.kernel[1]).map(|k| g.valid_range(1, k)).collect() }
    }

    /// `valid_range(0, ki)`.
    pub(crate) fn row(&self, ki: usize) -> (usize, usize, isize) {
        self.rows[ki]
    }

    /// `valid_range(1, kj)`.
    pub(crate) fn col(&self, kj: usize) -> (usize, usize, isize) {
        self.cols[kj]
    }
}

/// The groups `(first, count)` of a batch of `batch` images whose buffers of `per_image` values
/// each fit `budget` values (one image at least): a large input (Inception at 299x299) does not
/// need gigabytes of scratch.
pub(crate) fn batch_groups(batch: usize, per_image: usize, budget: usize) -> impl Iterator<Item = (usize, usize)> {
    let size = (budget / per_image.max(1)).clamp(1, batch.max(1));
    (0..batch).step_by(size).map(move |first| (first, size.min(batch - first)))
}

/// Which path the convolutions take: `DDPM_CONV`, read once (see `conv::by_image`).
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum ConvMode {
    /// Each convolution the path measured fastest for its shape (unset or `auto`).
    Auto,
    /// Winograd where it applies, else batch-folded GEMMs (the choice before image by image).
    Batched,
    /// As `Auto`, with Winograd kept to F(2x2, 3x3).
    Winograd2,
    /// Batch-folded GEMMs only.
    Im2col,
    /// Image by image only.
    ByImage,
}

impl ConvMode {
    pub(super) fn get() -> Self {
        static MODE: std::sync::OnceLock<ConvMode> = std::sync::OnceLock::new();
        *MODE.get_or_init(|| match std::env::var("DDPM_CONV") {
            Err(_) => Self::Auto,
            Ok(v) => match v.as_str() {
                "" | "auto" => Self::Auto,
                "batched" => Self::Batched,
                "winograd2" => Self::Winograd2,
                "im2col" => Self::Im2col,
                "by-image" => Self::ByImage,
                other => {
                    eprintln!("warning: DDPM_CONV={other:?} is not a convolution path (auto, batched, winograd2, im2col or by-image); using auto");
                    Self::Auto
                }
            },
        })
    }

    /// Whether Winograd may take the convolutions it applies to.
    pub(super) fn winograd(self) -> bool {
        matches!(self, Self::Auto | Self::Batched | Self::Winograd2)
    }

    /// Whether Winograd may take F(4x4, 3x3).
    pub(super) fn winograd4(self) -> bool {
        matches!(self, Self::Auto | Self::Batched)
    }
}
