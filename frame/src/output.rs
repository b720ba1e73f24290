//! From accumulators to files: the 8-bit display image (PNG, through a
//! [`ViewTransform`]) and the linear float frame (OpenEXR), and reading an
//! EXR back.
//!
//! Why two outputs: artists composite and grade from the scene-linear EXR
//! (`color / weight`, untouched), and look at the PNG.
//!
//! **Invariant:** every frame file is written atomically: the bytes go to a
//! temporary file in the destination directory which is flushed, synced and
//! then renamed over the final name, so a crash or a full disk never leaves a
//! half-written frame under the name the farm serves.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;

use crate::view::quantize;
use crate::{FrameBuffer, OutputOptions};

/// Writing a frame failed. Each variant names the file.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    #[error("writing {path}: {source}")]
    Io { path: String, source: std::io::Error },
    #[error("encoding PNG {path}: {source}")]
    Encode { path: String, source: image::ImageError },
    #[error("encoding EXR {path}: {source}")]
    Exr { path: String, source: exr::error::Error },
}

/// Reading a frame's EXR back failed.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("reading EXR {path}: {source}")]
    Exr { path: String, source: exr::error::Error },
    #[error("EXR {path}: {detail}")]
    Shape { path: String, detail: String },
}

/// The EXR channels of the denoiser's guides, beside `R`, `G`, `B`, in a
/// denoised job's raw frame: the means of the first hit's albedo and
/// normal. With them the raw EXR alone is the denoiser's whole input, so
/// `tessera verify` can re-derive the denoised frame from it.
pub const GUIDE_CHANNELS: [&str; 6] = ["albedo.R", "albedo.G", "albedo.B", "normal.X", "normal.Y", "normal.Z"];

impl FrameBuffer {
    /// The frame as row-major 8-bit RGB through a view transform.
    pub fn to_display8(&self, opts: &OutputOptions) -> Vec<u8> {
        let n = self.weight.len();
        let mut out = Vec::with_capacity(3 * n);
        for i in 0..n {
            out.extend(opts.view.to_display(self.pixel(i), opts.exposure).map(quantize));
        }
        out
    }

    /// Writes the frame as an 8-bit sRGB PNG, Standard view, 0 EV.
    pub fn write_png(&self, path: &Path) -> Result<(), WriteError> {
        self.write_png_with(path, &OutputOptions::default())
    }

    /// Writes the frame as an 8-bit PNG through `opts`' view transform.
    pub fn write_png_with(&self, path: &Path, opts: &OutputOptions) -> Result<(), WriteError> {
        use image::ImageEncoder;
        let pixels = self.to_display8(opts);
        write_atomically(path, |out| {
            image::codecs::png::PngEncoder::new(out)
                .write_image(&pixels, self.width, self.height, image::ExtendedColorType::Rgb8)
                .map_err(|source| match source {
                    image::ImageError::IoError(source) => WriteError::Io { path: path.display().to_string(), source },
                    source => WriteError::Encode { path: path.display().to_string(), source },
                })
        })
    }

    /// Writes the frame as a scene-linear float EXR: R, G, B as 32-bit floats
    /// holding `color / weight` exactly (no view transform, no exposure),
    /// ZIP-compressed scanlines (lossless, read by every EXR reader). A
    /// frame with guides also gets the [`GUIDE_CHANNELS`].
    pub fn write_exr(&self, path: &Path) -> Result<(), WriteError> {
        if self.guides.is_some() {
            return self.write_exr_with_guides(path);
        }
        use exr::prelude::{Encoding, Image, SpecificChannels, Vec2, WritableImage};
        let width = self.width as usize;
        let channels = SpecificChannels::rgb(|Vec2(x, y): Vec2<usize>| {
            let [r, g, b] = self.pixel(y * width + x);
            (r, g, b)
        });
        let image = Image::from_encoded_channels(
            (self.width as usize, self.height as usize),
            Encoding::SMALL_LOSSLESS,
            channels,
        );
        write_atomically(path, |out| {
            image.write().to_buffered(out).map_err(|source| match source {
                exr::error::Error::Io(source) => WriteError::Io { path: path.display().to_string(), source },
                source => WriteError::Exr { path: path.display().to_string(), source },
            })
        })
    }
}

impl FrameBuffer {
    fn write_exr_with_guides(&self, path: &Path) -> Result<(), WriteError> {
        use exr::prelude::{AnyChannel, AnyChannels, Encoding, FlatSamples, Image, Layer, LayerAttributes};
        use exr::prelude::{SmallVec, WritableImage};
        let color = self.means(&self.color, 3);
        let mut planes: Vec<(&str, Vec<f32>)> = ["R", "G", "B"]
            .iter()
            .enumerate()
            .map(|(c, name)| (*name, color[c..].iter().step_by(3).copied().collect()))
            .collect();
        if let Some(g) = &self.guides {
            let (albedo, normal) = (self.means(&g.albedo, 3), self.means(&g.normal, 3));
            for (k, name) in GUIDE_CHANNELS.iter().enumerate() {
                let plane = if k < 3 { &albedo } else { &normal };
                planes.push((name, plane[k % 3..].iter().step_by(3).copied().collect()));
            }
        }
        let list: SmallVec<[AnyChannel<FlatSamples>; 4]> =
            planes.into_iter().map(|(name, data)| AnyChannel::new(name, FlatSamples::F32(data))).collect();
        let layer = Layer::new(
            (self.width as usize, self.height as usize),
            LayerAttributes::default(),
            Encoding::SMALL_LOSSLESS,
            AnyChannels::sort(list),
        );
        let image = Image::from_layer(layer);
        write_atomically(path, |out| {
            image.write().to_buffered(out).map_err(|source| match source {
                exr::error::Error::Io(source) => WriteError::Io { path: path.display().to_string(), source },
                source => WriteError::Exr { path: path.display().to_string(), source },
            })
        })
    }

    /// Reads a frame's EXR back as a frame of weight 1 a pixel, with its
    /// guides when it has all of the [`GUIDE_CHANNELS`]: exactly what
    /// [`FrameBuffer::denoised`] needs to give, bit for bit, the denoised
    /// frame the farm wrote from the tiles (means of weight 1 are the
    /// stored values themselves).
    pub fn read_exr(path: &Path) -> Result<FrameBuffer, ReadError> {
        use exr::prelude::{FlatSamples, ReadChannels, ReadLayers};
        let name = path.display().to_string();
        let shape = |detail: String| ReadError::Shape { path: name.clone(), detail };
        let image = exr::prelude::read()
            .no_deep_data()
            .largest_resolution_level()
            .all_channels()
            .first_valid_layer()
            .all_attributes()
            .non_parallel()
            .from_file(path)
            .map_err(|source| ReadError::Exr { path: name.clone(), source })?;
        let layer = image.layer_data;
        let (w, h) = (layer.size.width(), layer.size.height());
        let n = w.checked_mul(h).filter(|&n| n > 0 && n as u64 <= crate::MAX_PIXELS);
        let n = n.ok_or_else(|| shape(format!("{w}x{h} is not a frame size")))?;
        let plane = |wanted: &str| -> Result<Option<Vec<f32>>, ReadError> {
            let Some(channel) = layer.channel_data.list.iter().find(|c| c.name.to_string() == wanted) else {
                return Ok(None);
            };
            match &channel.sample_data {
                FlatSamples::F32(v) if v.len() == n => Ok(Some(v.clone())),
                _ => Err(shape(format!("channel {wanted} is not {n} 32-bit floats"))),
            }
        };
        let interleave = |names: &[&str]| -> Result<Option<Vec<f32>>, ReadError> {
            let mut planes = Vec::new();
            for name in names {
                match plane(name)? {
                    Some(p) => planes.push(p),
                    None => return Ok(None),
                }
            }
            Ok(Some((0..n).flat_map(|i| planes.iter().map(move |p| p[i])).collect()))
        };
        let color = interleave(&["R", "G", "B"])?.ok_or_else(|| shape("no R, G, B channels".into()))?;
        let albedo = interleave(&GUIDE_CHANNELS[..3])?;
        let normal = interleave(&GUIDE_CHANNELS[3..])?;
        let guides = match (albedo, normal) {
            (Some(albedo), Some(normal)) => Some(super::Guides { albedo, normal }),
            (None, None) => None,
            _ => return Err(shape("some of the denoiser's guide channels but not all".into())),
        };
        Ok(FrameBuffer { width: w as u32, height: h as u32, color, weight: vec![1.0; n], guides })
    }
}

/// Writes `path` through a temporary file in the same directory (so the final
/// rename stays on one filesystem and is atomic), synced before the rename.
/// On any error the temporary file is removed and `path` is untouched.
pub fn write_atomically(
    path: &Path,
    write: impl FnOnce(&mut BufWriter<&mut File>) -> Result<(), WriteError>,
) -> Result<(), WriteError> {
    let io_err = |source| WriteError::Io { path: path.display().to_string(), source };
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let mut prefix = std::ffi::OsString::from(".");
    prefix.push(path.file_name().unwrap_or_default());
    prefix.push(".");
    let mut builder = tempfile::Builder::new();
    builder.prefix(&prefix).suffix(".tmp");
    // Like File::create: 0666 less the umask (tempfile's default is 0600).
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        builder.permissions(std::fs::Permissions::from_mode(0o666));
    }
    let mut tmp = builder.tempfile_in(dir).map_err(io_err)?;
    {
        let mut out = BufWriter::new(tmp.as_file_mut());
        write(&mut out)?;
        out.flush().map_err(io_err)?;
    }
    tmp.as_file().sync_all().map_err(io_err)?;
    tmp.persist(path).map_err(|e| io_err(e.error))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_frame as frame;
    use crate::ViewTransform;

    #[test]
    fn bad_values_map_to_black_in_every_view() {
        for view in ViewTransform::ALL {
            for v in [f32::NAN, -1.0, -0.0, f32::NEG_INFINITY, -1e30] {
                assert_eq!(view.to_display([v; 3], 0.0), [0.0; 3], "{view} {v}");
            }
            // NaN in one channel only blackens that channel's input.
            let d = view.to_display([f32::NAN, 0.18, 0.18], 0.0);
            assert!(d.iter().all(|c| c.is_finite() && (0.0..=1.0).contains(c)), "{view} {d:?}");
            // Infinite light and absurd exposure do not produce NaN.
            let d = view.to_display([f32::INFINITY, 1.0, 0.0], 0.0);
            assert!(d.iter().all(|c| (0.0..=1.0).contains(c)), "{view} {d:?}");
            let d = view.to_display([0.5; 3], f32::NAN);
            assert_eq!(d, [0.0; 3], "{view}");
            let d = view.to_display([0.5; 3], 1000.0);
            assert!(d.iter().all(|c| (0.0..=1.0).contains(c)), "{view} {d:?}");
        }
        let f = frame(2, 1, &[[f32::NAN, -3.0, f32::NEG_INFINITY], [0.5, 0.5, 0.5]]);
        for view in ViewTransform::ALL {
            let px = f.to_display8(&OutputOptions { view, exposure: 0.0 });
            assert_eq!(&px[..3], &[0, 0, 0], "{view}");
            assert!(px[3..].iter().all(|&c| c > 0), "{view}");
        }
        // Nothing landed (weight 0) is black too.
        let empty = FrameBuffer::new(1, 1);
        for view in ViewTransform::ALL {
            assert_eq!(empty.to_display8(&OutputOptions { view, exposure: 3.0 }), vec![0, 0, 0], "{view}");
        }
    }

    #[test]
    fn exr_round_trips_float_pixels_exactly() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("frame.exr");
        let pixels = [
            [0.0, 0.18, 1.0],
            [1234.5, 1e-7, 0.333_333_34],
            [f32::MIN_POSITIVE, 65504.0, 3.0e10],
            [0.5, 0.25, 0.125],
            [7.0, 8.0, 9.0],
            [1.0e-3, 2.0e-3, 3.0e-3],
        ];
        let mut f = frame(3, 2, &pixels);
        f.color[15] = 3.0; // pixel 5, weight 2: not an exact binary fraction of the sum
        f.weight[5] = 3.0;
        f.write_exr(&path).unwrap();
        let read = exr::prelude::read_first_rgba_layer_from_file(
            &path,
            |size, _| (size, vec![[0.0f32; 3]; size.width() * size.height()]),
            |(size, px): &mut (exr::prelude::Vec2<usize>, Vec<[f32; 3]>),
             pos: exr::prelude::Vec2<usize>,
             (r, g, b, _a): (f32, f32, f32, f32)| {
                px[pos.y() * size.width() + pos.x()] = [r, g, b];
            },
        )
        .unwrap();
        let (size, got) = &read.layer_data.channel_data.pixels;
        assert_eq!((size.width(), size.height()), (3, 2));
        for (i, p) in got.iter().enumerate() {
            assert_eq!(p.map(f32::to_bits), f.pixel(i).map(f32::to_bits), "pixel {i}");
        }
        // Only the frame is left in the directory: no temporary file.
        let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names, vec![std::ffi::OsString::from("frame.exr")]);
    }

    #[test]
    fn an_exr_with_guides_gives_back_the_denoisers_input_exactly() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("frame.exr");
        let (w, h) = (5u32, 4u32);
        let n = (w * h) as usize;
        let mut f = FrameBuffer::with_guides(w, h);
        for i in 0..n {
            let v = i as f32;
            f.weight[i] = if i == 3 { 0.0 } else { 1.0 + (i % 3) as f32 };
            for c in 0..3 {
                f.color[3 * i + c] = 0.1 * v + c as f32 / 7.0;
                let g = f.guides.as_mut().unwrap();
                g.albedo[3 * i + c] = (v + c as f32) / 37.0;
                g.normal[3 * i + c] = if c == 2 { 1.0 } else { -0.3 + v / 50.0 };
            }
        }
        f.write_exr(&path).unwrap();
        let read = FrameBuffer::read_exr(&path).unwrap();
        assert_eq!((read.width, read.height), (w, h));
        for i in 0..n {
            assert_eq!(read.pixel(i).map(f32::to_bits), f.pixel(i).map(f32::to_bits), "pixel {i}");
        }
        assert!(read.guides.is_some());
        let (a, b) = (f.denoised().unwrap(), read.denoised().unwrap());
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&a.color), bits(&b.color), "the denoised frame from the EXR is the farm's, bit for bit");
        // A frame without guides reads back without them.
        let plain = frame(2, 1, &[[0.5; 3], [2.0, 1.0, 0.0]]);
        plain.write_exr(&path).unwrap();
        let read = FrameBuffer::read_exr(&path).unwrap();
        assert_eq!((read.guides.is_none(), read.pixel(1)), (true, [2.0, 1.0, 0.0]));
        // Not an EXR: a clear error naming the file.
        std::fs::write(&path, b"not an exr").unwrap();
        let err = FrameBuffer::read_exr(&path).unwrap_err();
        assert!(err.to_string().contains("frame.exr"), "{err}");
    }

    #[test]
    fn png_round_trips_through_image() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("frame.png");
        let f = frame(3, 2, &[[0.18; 3], [1.0, 0.0, 0.0], [0.0; 3], [0.5; 3], [2.0; 3], [0.01; 3]]);
        f.write_png(&path).unwrap();
        let img = image::open(&path).unwrap().to_rgb8();
        assert_eq!(img.dimensions(), (3, 2));
        assert_eq!(img.as_raw(), &f.to_display8(&OutputOptions::default()));
        assert_eq!(img.get_pixel(1, 0).0, [255, 0, 0]);

        let opts = OutputOptions { view: ViewTransform::AgX, exposure: -1.0 };
        f.write_png_with(&path, &opts).unwrap();
        let img = image::open(&path).unwrap().to_rgb8();
        assert_eq!(img.dimensions(), (3, 2));
        assert_eq!(img.as_raw(), &f.to_display8(&opts));
        let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names, vec![std::ffi::OsString::from("frame.png")]);
    }

    #[test]
    fn failed_write_leaves_no_file() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("no-such-dir").join("frame.png");
        let f = frame(1, 1, &[[0.5; 3]]);
        let err = f.write_png(&missing).unwrap_err();
        assert!(matches!(err, WriteError::Io { .. }), "{err}");
        assert!(err.to_string().contains("frame.png"), "{err}");
        // An existing frame is replaced whole, never truncated in place.
        let path = dir.path().join("frame.exr");
        std::fs::write(&path, b"old").unwrap();
        f.write_exr(&path).unwrap();
        assert!(std::fs::read(&path).unwrap().starts_with(&[0x76, 0x2f, 0x31, 0x01]));
    }
}
