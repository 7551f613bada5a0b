//! The decompressed layer stream as the tar reader reads it.
//!
//! tar-rs reads a PAX extended header or GNU long name/link record whole into memory before
//! it hands out the entry it describes, however large the record says it is. [`Guarded`]
//! sits below the tar reader and watches the blocks read while the reader looks for the next
//! entry ([`Guard::headers_begin`] .. [`Guard::headers_end`]; the applier reads each entry's
//! body to its end before that, so only padding, headers and extension data are read then). It
//! follows the headers from block to block and refuses an extension record over
//! [`MAX_EXTENSION`] bytes before its data is read, naming it. It also notes whether the
//! stream ended with the end-of-archive marker (a zero block where a header belongs), and
//! keeps the first read error of the decompressor, so that a corrupt gzip or zstd stream is
//! reported as such whichever reader met it.

use std::cell::{Cell, RefCell};
use std::io::{self, Read};
use std::rc::Rc;

use tar::Header;

use super::safepath::display_name;

/// Largest PAX extended header or GNU long name/link record accepted (1 MiB): ample for any
/// path (PATH_MAX is 4 KiB) and a few xattrs.
pub const MAX_EXTENSION: u64 = 1 << 20;
/// All header material read while looking for one entry: up to three extension records,
/// GNU sparse maps, headers and padding.
const MAX_HEADER_BYTES: u64 = 4 * MAX_EXTENSION;
const BLOCK: u64 = 512;

fn round_up(n: u64) -> u64 {
    n.div_ceil(BLOCK) * BLOCK
}

#[derive(Default)]
struct State {
    pos: Cell<u64>,
    in_headers: Cell<bool>,
    header_bytes: Cell<u64>,
    /// Start of the header block the tar reader reads next, while it is known.
    next_header: Cell<Option<u64>>,
    block: RefCell<Vec<u8>>,
    saw_end: Cell<bool>,
    failure: RefCell<Option<String>>,
}

/// The applier's handle on a [`Guarded`] stream.
pub(super) struct Guard(Rc<State>);

/// The stream handed to the tar reader.
pub(super) struct Guarded<R> {
    inner: R,
    /// Names the compression in the errors of the decompressor.
    compression: &'static str,
    st: Rc<State>,
}

impl Guard {
    pub(super) fn new<R: Read>(inner: R, compression: &'static str) -> (Guard, Guarded<R>) {
        let st = Rc::new(State::default());
        (Guard(st.clone()), Guarded { inner, compression, st })
    }

    /// The tar reader is about to look for the next entry.
    pub(super) fn headers_begin(&self) {
        let st = &self.0;
        st.in_headers.set(true);
        st.header_bytes.set(0);
        st.next_header.set(Some(round_up(st.pos.get())));
        st.block.borrow_mut().clear();
    }

    pub(super) fn headers_end(&self) {
        self.0.in_headers.set(false);
        self.0.next_header.set(None);
    }

    /// Whether a zero block was read where a header belongs (the end-of-archive marker).
    pub(super) fn saw_end(&self) -> bool {
        self.0.saw_end.get()
    }

    /// Bytes of the decompressed stream read so far.
    pub(super) fn pos(&self) -> u64 {
        self.0.pos.get()
    }

    /// Why the stream failed (the whole message): a decompression error or an oversized
    /// extension record.
    pub(super) fn failure(&self) -> Option<String> {
        self.0.failure.borrow().clone()
    }
}

impl<R> Guarded<R> {
    fn fail(&self, message: String) -> io::Error {
        self.st.failure.borrow_mut().get_or_insert(message.clone());
        io::Error::new(io::ErrorKind::InvalidData, message)
    }

    /// Collect the bytes of the expected header block from `data` (read at `start`), and
    /// check each complete one.
    fn track(&self, data: &[u8], start: u64) -> io::Result<()> {
        let end = start + data.len() as u64;
        while let Some(h) = self.st.next_header.get() {
            let mut block = self.st.block.borrow_mut();
            let from = (h + block.len() as u64).max(start);
            let to = (h + BLOCK).min(end);
            if from >= to {
                return Ok(());
            }
            block.extend_from_slice(&data[(from - start) as usize..(to - start) as usize]);
            if block.len() < BLOCK as usize {
                return Ok(());
            }
            let next = self.check_header(&block, h);
            block.clear();
            drop(block);
            self.st.next_header.set(next?);
        }
        Ok(())
    }

    /// Look at a header block: the end marker, an extension record (checked against the
    /// limit; the next header follows its data), or the entry itself (tracking ends).
    fn check_header(&self, block: &[u8], at: u64) -> io::Result<Option<u64>> {
        if block.iter().all(|b| *b == 0) {
            self.st.saw_end.set(true);
            return Ok(None);
        }
        let h = Header::from_byte_slice(block);
        let sum: u64 = block[..148].iter().chain(&block[156..]).map(|b| u64::from(*b)).sum::<u64>() + 8 * 32;
        if h.cksum().ok().map(u64::from) != Some(sum) {
            // The tar reader refuses it.
            return Ok(None);
        }
        // Only these are read into memory by the tar reader (and only with a ustar or GNU
        // magic, as it checks).
        let t = h.entry_type();
        let kind = if t.is_pax_local_extensions() {
            "PAX extended header"
        } else if t.is_gnu_longname() {
            "GNU long name record"
        } else if t.is_gnu_longlink() {
            "GNU long link record"
        } else {
            return Ok(None);
        };
        if h.as_gnu().is_none() && h.as_ustar().is_none() {
            return Ok(None);
        }
        let Ok(size) = h.entry_size() else { return Ok(None) };
        if size > MAX_EXTENSION {
            return Err(self.fail(format!(
                "{kind} {:?} holds {size} bytes, over the limit of {MAX_EXTENSION}",
                display_name(&h.path_bytes())
            )));
        }
        Ok(Some(at + BLOCK + round_up(size)))
    }
}

impl<R: Read> Read for Guarded<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = match self.inner.read(buf) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => return Err(e),
            Err(e) => return Err(self.fail(format!("corrupt {} layer stream: {e}", self.compression))),
        };
        let start = self.st.pos.get();
        self.st.pos.set(start + n as u64);
        if self.st.in_headers.get() && n > 0 {
            let total = self.st.header_bytes.get() + n as u64;
            self.st.header_bytes.set(total);
            if total > MAX_HEADER_BYTES {
                return Err(self.fail(format!("more than {MAX_HEADER_BYTES} bytes of headers for one entry")));
            }
            self.track(&buf[..n], start)?;
        }
        Ok(n)
    }
}
