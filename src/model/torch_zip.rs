//! Reading PyTorch zip checkpoints (`torch.save`) as untrusted data. candle's pickle reader
//! does the unpickling; this module stands in front of it, because candle trusts the file: a
//! string length or a tensor shape in the pickle sizes a buffer before anything is checked
//! (a 4 GiB string, a 10^14-element tensor over 16 bytes of storage), and some malformed
//! pickles panic inside it. So the pickle program is first walked opcode by opcode (the
//! opcodes candle knows) to check every length against the bytes that are there, every
//! tensor's claimed size is checked against its storage entry before it is read, and a
//! panic left in candle's reader becomes an error.

use std::collections::HashMap;
use std::io::Read;
use std::path::Path;

use candle_core::Tensor;
use candle_core::pickle::{PthTensors, TensorInfo};

/// Sub-dicts of a trainer checkpoint (`{step, model, opt, ema, ...}`) that hold a state_dict.
const NESTED_STATE_DICTS: [&str; 2] = ["ema", "model"];

/// Largest `data.pkl` read into memory (a state_dict's pickle is kilobytes; the tensors are
/// separate entries).
const MAX_PICKLE_BYTES: u64 = 64 << 20;

/// Reads the top-level dict if it holds tensors, else the first nested state_dict of a
/// trainer checkpoint that does.
pub(crate) fn read(path: &Path) -> Result<HashMap<String, Tensor>, String> {
    let entries = zip_entries(path)?;
    for (name, bytes) in &entries.pickles {
        check_pickle(bytes).map_err(|e| format!("{name}: {e}"))?;
    }
    for key in std::iter::once(None).chain(NESTED_STATE_DICTS.map(Some)) {
        let pth = match caught(|| PthTensors::new(path, key)) {
            Ok(pth) => pth,
            // A trainer checkpoint need not have every nested dict.
            Err(_) if key.is_some() => continue,
            Err(e) => return Err(e),
        };
        let mut names: Vec<&String> = pth.tensor_infos().keys().collect();
        names.sort();
        let mut tensors = HashMap::new();
        for name in names {
            let info = &pth.tensor_infos()[name];
            check_size(info, &entries.sizes)?;
            if let Some(t) = caught(|| pth.get(name))? {
                tensors.insert(name.clone(), t);
            }
        }
        if !tensors.is_empty() {
            return Ok(tensors);
        }
    }
    Ok(HashMap::new())
}

/// What the zip directory says: every entry's size, and the pickle programs' bytes.
struct Entries {
    sizes: HashMap<String, u64>,
    pickles: Vec<(String, Vec<u8>)>,
}

fn zip_entries(path: &Path) -> Result<Entries, String> {
    let file = std::fs::File::open(path).map_err(|e| e.to_string())?;
    let file_len = file.metadata().map_err(|e| e.to_string())?.len();
    let mut zip = zip::ZipArchive::new(std::io::BufReader::new(file)).map_err(|e| e.to_string())?;
    let mut sizes = HashMap::new();
    let mut pickles = Vec::new();
    for i in 0..zip.len() {
        let mut entry = zip.by_index(i).map_err(|e| e.to_string())?;
        let name = entry.name().map_err(|e| e.to_string())?.into_owned();
        // PyTorch stores entries uncompressed: an entry larger than the file is a lie.
        let size = entry.size();
        if size > file_len && entry.compression() == zip::CompressionMethod::Stored {
            return Err(format!(
                "entry {name} claims {size} bytes in a {file_len}-byte file"
            ));
        }
        if name.ends_with("data.pkl") {
            if size > MAX_PICKLE_BYTES {
                return Err(format!("{name} is {size} bytes"));
            }
            let mut bytes = Vec::new();
            entry
                .by_ref()
                .take(MAX_PICKLE_BYTES)
                .read_to_end(&mut bytes)
                .map_err(|e| format!("{name}: {e}"))?;
            pickles.push((name.clone(), bytes));
        }
        sizes.insert(name, size);
    }
    Ok(Entries { sizes, pickles })
}

/// Refuses a tensor whose claimed shape and offset need more bytes than its storage entry
/// holds (`Tensor::from_reader` would allocate them first).
fn check_size(info: &TensorInfo, sizes: &HashMap<String, u64>) -> Result<(), String> {
    let available = sizes
        .get(&info.path)
        .copied()
        .ok_or_else(|| format!("tensor {}: no storage entry {}", info.name, info.path))?;
    let needed = info
        .layout
        .dims()
        .iter()
        .try_fold(info.dtype.size_in_bytes() as u64, |n, &d| {
            n.checked_mul(d as u64)
        })
        .and_then(|n| n.checked_add(info.layout.start_offset() as u64));
    match needed {
        Some(n) if n <= available => Ok(()),
        _ => Err(format!(
            "tensor {} claims shape {:?} at offset {}, its storage holds {available} bytes",
            info.name,
            info.layout.dims(),
            info.layout.start_offset()
        )),
    }
}

/// Runs a call into candle's pickle reader, turning a panic into an error.
fn caught<T>(f: impl FnOnce() -> candle_core::Result<T>) -> Result<T, String> {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
        Ok(result) => result.map_err(|e| e.to_string()),
        Err(_) => Err("malformed pickle (the reader gave up)".to_owned()),
    }
}

/// Walks the pickle program over the opcodes candle's reader implements, checking each
/// argument against the bytes left; stops at STOP or at an opcode candle does not know
/// (its reader refuses it by itself).
fn check_pickle(p: &[u8]) -> Result<(), String> {
    let mut at = 0usize;
    let need = |at: usize, n: usize| -> Result<usize, String> {
        at.checked_add(n)
            .filter(|&end| end <= p.len())
            .ok_or_else(|| format!("argument at byte {at} runs past the end of the pickle"))
    };
    let len_u32 = |at: usize| -> Result<usize, String> {
        let end = need(at, 4)?;
        Ok(u32::from_le_bytes(p[at..end].try_into().map_err(|_| "short length")?) as usize)
    };
    let line = |at: usize| -> Result<usize, String> {
        p[at..]
            .iter()
            .position(|&b| b == b'\n')
            .map(|i| at + i + 1)
            .ok_or_else(|| format!("unterminated line at byte {at}"))
    };
    while at < p.len() {
        let op = p[at];
        at += 1;
        at = match op {
            b'.' => return Ok(()),
            0x80 | b'q' | b'K' | b'h' => need(at, 1)?,
            b'M' => need(at, 2)?,
            b'r' | b'J' | b'j' => need(at, 4)?,
            b'G' => need(at, 8)?,
            b'c' => line(line(at)?)?,
            b'X' => need(at + 4, len_u32(at)?)?,
            0x8a => {
                let n = usize::from(*p.get(at).ok_or("LONG1 without a length")?);
                if n > 8 {
                    return Err(format!("a {n}-byte integer at byte {at}"));
                }
                need(at + 1, n)?
            }
            b')' | b'R' | b'(' | b't' | b'Q' | b'N' | 0x85 | 0x86 | 0x87 | 0x88 | 0x89 | b's'
            | b'u' | b'}' | b'd' | b'b' | 0x81 | b']' | b'a' | b'e' => at,
            _ => return Ok(()),
        };
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pickle_walk_checks_lengths_against_the_bytes() {
        assert_eq!(check_pickle(b"\x80\x02}(X\x01\x00\x00\x00aK\x01u."), Ok(()));
        assert!(check_pickle(b"\x80\x02}(X\xf0\xff\xff\xffabc").is_err());
        assert!(check_pickle(b"\x80\x02\x8a\x09\x01\x01\x01\x01\x01\x01\x01\x01\x01.").is_err());
        assert!(check_pickle(b"ctorch\nFloatStor").is_err());
        assert!(check_pickle(b"J\x01\x02").is_err());
    }
}
