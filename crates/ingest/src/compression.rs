//! Compressed bodies: gzip (one member or several) and zstd, inflated to
//! at most a limit. Whatever a body claims, no more than `limit` bytes are
//! ever inflated from it: a decompression bomb stops at the limit.

use std::io::{self, Read};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// How a body is encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    Identity,
    Gzip,
    Zstd,
}

impl Encoding {
    /// The encoding a `Content-Encoding` header names; `Err` with the
    /// value (lower case) when it is not one tally reads.
    pub fn from_header(value: Option<&str>) -> Result<Encoding, String> {
        let text = value.unwrap_or("").trim().to_ascii_lowercase();
        match text.as_str() {
            "" | "identity" => Ok(Encoding::Identity),
            "gzip" | "x-gzip" => Ok(Encoding::Gzip),
            "zstd" => Ok(Encoding::Zstd),
            _ => Err(text),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Encoding::Identity => "identity",
            Encoding::Gzip => "gzip",
            Encoding::Zstd => "zstd",
        }
    }
}

/// Whether a reader from [`decoder`] stopped at its limit.
#[derive(Clone, Default)]
pub struct Overflow(Arc<AtomicBool>);

impl Overflow {
    pub fn happened(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }
}

/// A reader that fails once more than `left` bytes come out of it.
struct Capped<R> {
    inner: R,
    left: u64,
    overflow: Overflow,
}

impl<R: Read> Read for Capped<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        // Ask for one byte more than allowed, to tell "exactly the limit"
        // from "over it".
        let want = buf.len().min(self.left.saturating_add(1) as usize);
        let n = self.inner.read(&mut buf[..want])?;
        if n as u64 > self.left {
            self.overflow.0.store(true, Ordering::Release);
            return Err(io::Error::other("the decompressed body is over the limit"));
        }
        self.left -= n as u64;
        Ok(n)
    }
}

/// Reads `source` as `encoding`, yielding at most `limit` decompressed
/// bytes: past that, reads fail and the returned [`Overflow`] says so.
pub fn decoder<'a, R: Read + Send + 'a>(
    encoding: Encoding,
    source: R,
    limit: u64,
) -> io::Result<(Box<dyn Read + Send + 'a>, Overflow)> {
    let inner: Box<dyn Read + Send + 'a> = match encoding {
        Encoding::Identity => Box::new(source),
        // Several gzip members one after another are one body, as gunzip
        // reads them.
        Encoding::Gzip => Box::new(flate2::read::MultiGzDecoder::new(source)),
        Encoding::Zstd => Box::new(zstd::stream::read::Decoder::new(source)?),
    };
    let overflow = Overflow::default();
    let capped = Capped {
        inner,
        left: limit,
        overflow: overflow.clone(),
    };
    Ok((Box::new(capped), overflow))
}

/// Why a body could not be inflated.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum InflateError {
    #[error("the body inflates to more than {limit} bytes")]
    TooLarge { limit: usize },
    #[error("the body is not valid {encoding}: {message}")]
    Corrupt {
        encoding: &'static str,
        message: String,
    },
    /// The caller's `grew` refused to go on.
    #[error("stopped while inflating the body")]
    Refused,
}

/// Inflates a whole body read already, to at most `limit` bytes. `grew` is
/// told the inflated size as it grows (a chunk at a time) and may refuse
/// to go on (`false`).
pub fn inflate(
    encoding: Encoding,
    packed: &[u8],
    limit: usize,
    mut grew: impl FnMut(usize) -> bool,
) -> Result<Vec<u8>, InflateError> {
    let corrupt = |e: io::Error| InflateError::Corrupt {
        encoding: encoding.name(),
        message: e.to_string(),
    };
    let (mut reader, overflow) = decoder(encoding, packed, limit as u64).map_err(corrupt)?;
    let mut out = Vec::with_capacity((packed.len() * 4).min(limit));
    let mut buf = vec![0u8; 256 << 10];
    loop {
        match reader.read(&mut buf) {
            Ok(0) => return Ok(out),
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(_) if overflow.happened() => return Err(InflateError::TooLarge { limit }),
            Err(e) => return Err(corrupt(e)),
        }
        if !grew(out.len()) {
            return Err(InflateError::Refused);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    fn decompress(
        encoding: Encoding,
        packed: &[u8],
        limit: usize,
    ) -> Result<Vec<u8>, InflateError> {
        inflate(encoding, packed, limit, |_| true)
    }

    #[test]
    fn bodies_decompress_up_to_the_limit_and_no_further() {
        let data = b"{\"a\":1}\n".repeat(1000);
        for (enc, packed) in [
            (Encoding::Gzip, gzip(&data)),
            (Encoding::Zstd, zstd::encode_all(&data[..], 3).unwrap()),
            (Encoding::Identity, data.clone()),
        ] {
            assert_eq!(decompress(enc, &packed, data.len()).unwrap(), data);
            let e = decompress(enc, &packed, data.len() - 1).unwrap_err();
            assert_eq!(
                e,
                InflateError::TooLarge {
                    limit: data.len() - 1
                }
            );
        }
        // Two gzip members are one body.
        let two = [gzip(b"ab"), gzip(b"cd")].concat();
        assert_eq!(decompress(Encoding::Gzip, &two, 10).unwrap(), b"abcd");
        let e = decompress(Encoding::Gzip, b"not gzip", 100).unwrap_err();
        assert!(e.to_string().contains("not valid gzip"), "{e}");
        let e = decompress(Encoding::Zstd, b"not zstd", 100).unwrap_err();
        assert!(e.to_string().contains("not valid zstd"), "{e}");
        // The caller may stop it as it grows.
        let e = inflate(Encoding::Identity, &data, data.len(), |n| n < 10).unwrap_err();
        assert_eq!(e, InflateError::Refused);
    }

    #[test]
    fn a_bomb_stops_at_the_limit() {
        // 1 GiB of zeros packs into about a megabyte; decompressing stops
        // at the limit.
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        let zeros = vec![0u8; 1 << 20];
        for _ in 0..1024 {
            e.write_all(&zeros).unwrap();
        }
        let bomb = e.finish().unwrap();
        assert!(bomb.len() < 2 << 20, "{}", bomb.len());
        let (mut r, overflow) = decoder(Encoding::Gzip, &bomb[..], 16 << 20).unwrap();
        let mut out = Vec::new();
        assert!(r.read_to_end(&mut out).is_err());
        assert!(overflow.happened());
        assert!(out.len() <= 16 << 20, "{}", out.len());
        let most = std::cell::Cell::new(0);
        let err = inflate(Encoding::Gzip, &bomb, 16 << 20, |n| {
            most.set(n);
            true
        })
        .unwrap_err();
        assert_eq!(err, InflateError::TooLarge { limit: 16 << 20 });
        assert!(most.get() <= 16 << 20);
    }

    #[test]
    fn encodings_are_read_from_the_header() {
        for (v, enc) in [
            (None, Encoding::Identity),
            (Some("gzip"), Encoding::Gzip),
            (Some("x-gzip"), Encoding::Gzip),
            (Some("GZIP"), Encoding::Gzip),
            (Some("zstd"), Encoding::Zstd),
            (Some("identity"), Encoding::Identity),
        ] {
            assert_eq!(Encoding::from_header(v), Ok(enc), "{v:?}");
        }
        assert_eq!(Encoding::from_header(Some("br")), Err("br".into()));
    }
}
