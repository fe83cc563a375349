//! Content-addressed frame files beside the database: `frames/<h[0..2]>/<h>.png`, where `h` is
//! the SHA-256 of the PNG bytes. A file is written atomically (temp + fsync + rename) before
//! the transaction that references it commits, so a committed row always has its file; a
//! crash in between leaves only an unreferenced file, which the recovery check removes.

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::StoreError;
use crate::env::Rgb8Image;
use crate::store::atomic::{io_error, write_file};

/// A frame encoded and hashed, ready to be written.
pub(crate) struct EncodedFrame {
    pub hash: String,
    pub width: u32,
    pub height: u32,
    pub png: Vec<u8>,
}

/// Encodes a frame as PNG and names it by its hash (CPU work: do it outside transactions).
pub(crate) fn encode(frame: &Rgb8Image) -> Result<EncodedFrame, StoreError> {
    let expected = frame.width as usize * frame.height as usize * 3;
    if frame.pixels.len() != expected || frame.width == 0 || frame.height == 0 {
        return Err(StoreError::Invalid(format!(
            "frame of {}x{} has {} bytes, expected {expected}",
            frame.width,
            frame.height,
            frame.pixels.len()
        )));
    }
    let img = image::RgbImage::from_raw(frame.width, frame.height, frame.pixels.clone())
        .ok_or_else(|| StoreError::Invalid("frame buffer size".into()))?;
    let mut png = Vec::new();
    img.write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
        .map_err(|e| StoreError::Invalid(format!("cannot encode PNG: {e}")))?;
    Ok(EncodedFrame {
        hash: hash_bytes(&png),
        width: frame.width,
        height: frame.height,
        png,
    })
}

/// Lower-case hex SHA-256.
pub(crate) fn hash_bytes(bytes: &[u8]) -> String {
    let digest = Sha256::digest(bytes);
    let mut s = String::with_capacity(64);
    for b in digest {
        s.push_str(&format!("{b:02x}"));
    }
    s
}

/// True for a well-formed content hash (64 lower-case hex digits).
pub(crate) fn is_hash(s: &str) -> bool {
    s.len() == 64
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// The file of a frame.
pub(crate) fn frame_path(root: &Path, hash: &str) -> PathBuf {
    root.join("frames")
        .join(hash.get(..2).unwrap_or("xx"))
        .join(format!("{hash}.png"))
}

/// Writes the frame file unless an intact one is already there.
pub(crate) fn write_frame(root: &Path, frame: &EncodedFrame) -> Result<(), StoreError> {
    let path = frame_path(root, &frame.hash);
    if let Ok(existing) = std::fs::read(&path)
        && hash_bytes(&existing) == frame.hash
    {
        return Ok(());
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(io_error("cannot create frame folder", dir))?;
    }
    write_file(&path, &frame.png).map_err(io_error("cannot write frame", &path))?;
    Ok(())
}

/// Reads and decodes a frame, checking its hash.
pub(crate) fn read_frame(root: &Path, hash: &str) -> Result<Rgb8Image, StoreError> {
    let path = frame_path(root, hash);
    let bytes = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(StoreError::MissingFrame {
                hash: hash.to_owned(),
                path,
            });
        }
        Err(e) => return Err(io_error("cannot read frame", &path)(e).into()),
    };
    decode_checked(&bytes, hash, &path)
}

/// Decodes PNG bytes that must hash to `hash`.
pub(crate) fn decode_checked(
    bytes: &[u8],
    hash: &str,
    path: &Path,
) -> Result<Rgb8Image, StoreError> {
    if hash_bytes(bytes) != hash {
        return Err(StoreError::CorruptFrame {
            hash: hash.to_owned(),
            path: path.to_owned(),
        });
    }
    decode_png(bytes).map_err(|_| StoreError::CorruptFrame {
        hash: hash.to_owned(),
        path: path.to_owned(),
    })
}

/// Decodes any image the `image` crate reads into RGB8.
pub(crate) fn decode_png(bytes: &[u8]) -> Result<Rgb8Image, image::ImageError> {
    let img = image::load_from_memory(bytes)?.to_rgb8();
    Ok(Rgb8Image {
        width: img.width(),
        height: img.height(),
        pixels: img.into_raw(),
    })
}
