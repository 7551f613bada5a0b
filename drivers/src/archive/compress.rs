//! Compression of layer tars, detected from the first bytes (as containerd's
//! `compression.DecompressStream` does), never from a file name.

use std::io::{self, BufReader, Read};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
    Zstd,
}

const GZIP_MAGIC: &[u8] = &[0x1f, 0x8b];
const ZSTD_MAGIC: &[u8] = &[0x28, 0xb5, 0x2f, 0xfd];
const BZIP2_MAGIC: &[u8] = b"BZh";
const XZ_MAGIC: &[u8] = &[0xfd, b'7', b'z', b'X', b'Z', 0x00];

/// Wrap `r` in the decompressor its first bytes call for. bzip2 and xz are recognised and
/// refused with a clear message (OCI layers are plain, gzip or zstd).
pub fn decompress<'a>(r: &'a mut dyn Read) -> io::Result<(Compression, Box<dyn Read + 'a>)> {
    // Read the magic bytes fully (a pipe may deliver them one at a time), then put them back
    // in front of the stream.
    let mut head = Vec::with_capacity(6);
    let mut b = [0u8; 6];
    while head.len() < 6 {
        match r.read(&mut b[..6 - head.len()]) {
            Ok(0) => break,
            Ok(n) => head.extend_from_slice(&b[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
    let kind = if head.starts_with(GZIP_MAGIC) {
        Compression::Gzip
    } else if head.starts_with(ZSTD_MAGIC) {
        Compression::Zstd
    } else if head.starts_with(BZIP2_MAGIC) || head.starts_with(XZ_MAGIC) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "bzip2/xz compressed layer: only plain, gzip and zstd layer tars are supported",
        ));
    } else {
        Compression::None
    };
    let buf = BufReader::with_capacity(64 * 1024, io::Cursor::new(head).chain(r));
    Ok(match kind {
        // MultiGzDecoder: concatenated gzip members (`gzip -c a b`) are a valid layer.
        Compression::Gzip => (kind, Box::new(flate2::read::MultiGzDecoder::new(buf))),
        Compression::Zstd => (kind, Box::new(zstd::stream::read::Decoder::with_buffer(buf)?)),
        Compression::None => (kind, Box::new(buf)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kind(data: &[u8]) -> io::Result<Compression> {
        let mut r = data;
        decompress(&mut r).map(|(k, _)| k)
    }

    #[test]
    fn detects_from_magic_bytes() {
        assert_eq!(kind(b"").unwrap(), Compression::None);
        assert_eq!(kind(b"abc").unwrap(), Compression::None);
        assert_eq!(kind(&[0x1f, 0x8b, 8, 0, 0, 0, 0, 0]).unwrap(), Compression::Gzip);
        assert_eq!(kind(&zstd::encode_all(&b"x"[..], 1).unwrap()).unwrap(), Compression::Zstd);
        assert!(kind(b"BZh91AY&SY").is_err());
        assert!(kind(&[0xfd, b'7', b'z', b'X', b'Z', 0, 0]).is_err());
    }

    #[test]
    fn plain_stream_is_passed_through_whole() {
        let mut r: &[u8] = b"0123456789";
        let (_, mut d) = decompress(&mut r).unwrap();
        let mut out = Vec::new();
        d.read_to_end(&mut out).unwrap();
        assert_eq!(out, b"0123456789");
    }
}
