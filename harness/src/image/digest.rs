//! Content digests of image blobs, and the reader that checks a blob against one as it flows.
//!
//! A [`Digest`] is parsed once, from the text an image gives (`sha256:<64 hex>` or
//! `sha512:<128 hex>`); every other algorithm or shape is refused. Because the hex part is
//! then known to be lowercase hex of a fixed length, `blobs/<alg>/<hex>` is a safe path.

use std::fmt;
use std::io::{self, Read};
use std::str::FromStr;

use oci_spec::image::{Digest as OciDigest, DigestAlgorithm};
use sha2::{Digest as _, Sha256, Sha512};

/// The hash algorithms cowbench verifies blobs with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Algorithm {
    Sha256,
    Sha512,
}

impl Algorithm {
    pub fn as_str(self) -> &'static str {
        match self {
            Algorithm::Sha256 => "sha256",
            Algorithm::Sha512 => "sha512",
        }
    }
}

/// A validated `algorithm:hex` content digest (oci-spec parses it; kept small, as it travels
/// in errors).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Digest {
    alg: Algorithm,
    hex: Box<str>,
}

/// Why a digest string was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid digest {text:?}: {reason}")]
pub struct DigestError {
    pub text: String,
    pub reason: String,
}

impl Digest {
    pub fn parse(text: &str) -> Result<Digest, DigestError> {
        let err = |reason: String| DigestError { text: text.into(), reason };
        // oci-spec checks the grammar and, for the SHA family, length and lowercase hex.
        let inner = OciDigest::from_str(text).map_err(|e| err(e.to_string()))?;
        let alg = match inner.algorithm() {
            DigestAlgorithm::Sha256 => Algorithm::Sha256,
            DigestAlgorithm::Sha512 => Algorithm::Sha512,
            other => return Err(err(format!("unsupported algorithm {other} (cowbench verifies sha256 and sha512)"))),
        };
        Ok(Digest { alg, hex: inner.digest().into() })
    }

    /// The digest of `bytes`.
    pub fn of(alg: Algorithm, bytes: &[u8]) -> Digest {
        let mut h = Hasher::new(alg);
        h.update(bytes);
        h.finish()
    }

    pub fn algorithm(&self) -> Algorithm {
        self.alg
    }

    /// The lowercase hex part.
    pub fn hex(&self) -> &str {
        &self.hex
    }

    /// `blobs/<alg>/<hex>`: where an OCI image layout keeps this blob.
    pub fn blob_path(&self) -> String {
        format!("blobs/{}/{}", self.alg.as_str(), self.hex())
    }
}

impl FromStr for Digest {
    type Err = DigestError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Digest::parse(s)
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.alg.as_str(), self.hex)
    }
}

/// A running hash of one of the [`Algorithm`]s.
#[derive(Clone)]
pub enum Hasher {
    Sha256(Sha256),
    Sha512(Sha512),
}

impl Hasher {
    pub fn new(alg: Algorithm) -> Hasher {
        match alg {
            Algorithm::Sha256 => Hasher::Sha256(Sha256::new()),
            Algorithm::Sha512 => Hasher::Sha512(Sha512::new()),
        }
    }

    pub fn update(&mut self, b: &[u8]) {
        match self {
            Hasher::Sha256(h) => h.update(b),
            Hasher::Sha512(h) => h.update(b),
        }
    }

    pub fn finish(self) -> Digest {
        let (alg, hex) = match self {
            Hasher::Sha256(h) => (Algorithm::Sha256, hex::encode(h.finalize())),
            Hasher::Sha512(h) => (Algorithm::Sha512, hex::encode(h.finalize())),
        };
        Digest::parse(&format!("{}:{hex}", alg.as_str())).expect("a computed digest is well-formed")
    }
}

impl io::Write for Hasher {
    fn write(&mut self, b: &[u8]) -> io::Result<usize> {
        self.update(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// What a blob turned out to be when it did not match what it claimed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mismatch {
    Digest { expected: Digest, actual: Digest },
    /// More bytes than the descriptor's size (reading stopped there) or fewer.
    Size { expected: u64, actual: u64 },
}

/// A reader that hashes what flows through it and, at its end, fails unless the content has
/// the expected digest (and size, when a descriptor gives one). The failure at the end keeps
/// a consumer that reads to EOF from ever seeing a poisoned stream end cleanly;
/// [`Verify::finish`] drains what the consumer left and gives the verdict.
pub struct Verify<R> {
    inner: R,
    hasher: Option<Hasher>,
    expected: Digest,
    expected_size: Option<u64>,
    read: u64,
    verdict: Option<Result<(), Mismatch>>,
}

impl<R: Read> Verify<R> {
    pub fn new(inner: R, expected: Digest, expected_size: Option<u64>) -> Self {
        Verify { hasher: Some(Hasher::new(expected.algorithm())), inner, expected, expected_size, read: 0, verdict: None }
    }

    fn conclude(&mut self) -> Result<(), Mismatch> {
        if let Some(v) = &self.verdict {
            return v.clone();
        }
        let actual = self.hasher.take().expect("hasher present until concluded").finish();
        let v = if actual != self.expected {
            Err(Mismatch::Digest { expected: self.expected.clone(), actual })
        } else {
            match self.expected_size {
                Some(n) if n != self.read => Err(Mismatch::Size { expected: n, actual: self.read }),
                _ => Ok(()),
            }
        };
        self.verdict = Some(v.clone());
        v
    }

    /// Read what is left and give the verdict. `Err(Ok(m))` is a mismatch, `Err(Err(e))` a
    /// read error before the end.
    pub fn finish(mut self) -> Result<(), Result<Mismatch, io::Error>> {
        if self.verdict.is_none() {
            let mut buf = vec![0u8; 64 << 10];
            loop {
                match self.read(&mut buf) {
                    Ok(0) => break,
                    Ok(_) => {}
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(_) if self.verdict.is_some() => break,
                    Err(e) => return Err(Err(e)),
                }
            }
        }
        self.conclude().map_err(Ok)
    }
}

fn mismatch_io(m: &Mismatch) -> io::Error {
    let msg = match m {
        Mismatch::Digest { expected, actual } => format!("blob does not match its digest: expected {expected}, got {actual}"),
        Mismatch::Size { expected, actual } => format!("blob size {actual} differs from its descriptor's {expected}"),
    };
    io::Error::new(io::ErrorKind::InvalidData, msg)
}

impl<R: Read> Read for Verify<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if let Some(v) = &self.verdict {
            return match v {
                Ok(()) => Ok(0),
                Err(m) => Err(mismatch_io(m)),
            };
        }
        if buf.is_empty() {
            return Ok(0);
        }
        // Read at most one byte past the descriptor's size: enough to tell "too long"
        // without following an endless stream.
        let want = match self.expected_size {
            Some(n) => buf.len().min((n + 1).saturating_sub(self.read).max(1) as usize),
            None => buf.len(),
        };
        let n = self.inner.read(&mut buf[..want])?;
        if n == 0 {
            return match self.conclude() {
                Ok(()) => Ok(0),
                Err(m) => Err(mismatch_io(&m)),
            };
        }
        self.read += n as u64;
        if let Some(limit) = self.expected_size {
            if self.read > limit {
                let m = Mismatch::Size { expected: limit, actual: self.read };
                self.hasher = None;
                self.verdict = Some(Err(m.clone()));
                return Err(mismatch_io(&m));
            }
        }
        self.hasher.as_mut().expect("hasher present until concluded").update(&buf[..n]);
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EMPTY: &str = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    #[test]
    fn parses_only_sha256_and_sha512_hex() {
        let d = Digest::parse(EMPTY).unwrap();
        assert_eq!(d.algorithm(), Algorithm::Sha256);
        assert_eq!(d.blob_path(), format!("blobs/sha256/{}", &EMPTY[7..]));
        assert_eq!(Digest::of(Algorithm::Sha256, b""), d);
        let s512 = Digest::of(Algorithm::Sha512, b"x");
        assert_eq!(Digest::parse(&s512.to_string()).unwrap(), s512);
        for bad in [
            "sha256:../../../outside/secret-layer.tar",
            "sha256:E3B0C44298FC1C149AFBF4C8996FB92427AE41E4649B934CA495991B7852B855",
            "sha256:e3b0",
            "md5:d41d8cd98f00b204e9800998ecf8427e",
            "sha384:38b060a751ac96384cd9327eb1b1e36a21fdb71114be07434c0cc7bf63f6e1da274edebfe76f65fbd51ad2f14898b95b",
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
            "/etc/passwd",
            "",
        ] {
            assert!(Digest::parse(bad).is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn verify_reports_digest_and_size() {
        let good = Digest::of(Algorithm::Sha256, b"hello");
        let mut r = Verify::new(&b"hello"[..], good.clone(), Some(5));
        io::copy(&mut r, &mut io::sink()).unwrap();
        assert!(r.finish().is_ok());
        // Other content: the consumer gets an error at the end, finish names both digests.
        let mut r = Verify::new(&b"hellO"[..], good.clone(), None);
        assert_eq!(io::copy(&mut r, &mut io::sink()).unwrap_err().kind(), io::ErrorKind::InvalidData);
        match r.finish() {
            Err(Ok(Mismatch::Digest { expected, actual })) => {
                assert_eq!(expected, good);
                assert_eq!(actual, Digest::of(Algorithm::Sha256, b"hellO"));
            }
            other => panic!("{other:?}"),
        }
        // Longer than the descriptor says: stops one byte past it.
        let r = Verify::new(&b"hello world"[..], good.clone(), Some(5));
        assert!(matches!(r.finish(), Err(Ok(Mismatch::Size { expected: 5, actual: 6 }))));
        // A consumer that stops early: finish drains and still checks.
        let mut r = Verify::new(&b"hello"[..], good, Some(5));
        let mut b = [0u8; 2];
        r.read_exact(&mut b).unwrap();
        assert!(r.finish().is_ok());
    }
}
