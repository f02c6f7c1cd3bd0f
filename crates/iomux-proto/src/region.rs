//! A part of an open file as a body source: what [`crate::Context::send_file`]
//! queues. The file is shared by `Arc`, so queuing a region (or the same
//! file for many connections) copies no bytes and holds no buffer; the
//! engine sends it in bounded pieces (`sendfile` where its I/O model allows).

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::sync::Arc;

/// `len` bytes of an open file from `offset`: a body a [`crate::Service`]
/// can send with [`crate::Context::send_file`].
///
/// ```
/// use iomux_proto::FileRegion;
/// use std::io::Write;
/// let path = std::env::temp_dir().join(format!("iomux-region-doc-{}", std::process::id()));
/// std::fs::File::create(&path).unwrap().write_all(b"hello, world").unwrap();
/// let file = std::fs::File::open(&path).unwrap();
/// let whole = FileRegion::whole(file).unwrap();
/// assert_eq!((whole.offset(), whole.len()), (0, 12));
/// let world = FileRegion::new(whole.file().clone(), 7, 5);
/// let mut buf = [0; 5];
/// assert_eq!(world.read_at(&mut buf).unwrap(), 5);
/// assert_eq!(&buf, b"world");
/// # std::fs::remove_file(&path).unwrap();
/// ```
#[derive(Debug, Clone)]
pub struct FileRegion {
    file: Arc<File>,
    offset: u64,
    len: u64,
}

impl FileRegion {
    /// `len` bytes of `file` from `offset`. Nothing is checked against the
    /// file's size: a file shorter than announced (one that shrank since)
    /// makes the engine close the connection once its bytes run out.
    pub fn new(file: Arc<File>, offset: u64, len: u64) -> FileRegion {
        FileRegion { file, offset, len }
    }

    /// All of `file`, as long as it is now.
    pub fn whole(file: File) -> io::Result<FileRegion> {
        let len = file.metadata()?.len();
        Ok(FileRegion::new(Arc::new(file), 0, len))
    }

    /// The open file (shared: clone it for another region of the same file).
    pub fn file(&self) -> &Arc<File> {
        &self.file
    }

    /// Where the region's next byte is in the file.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// Bytes left in the region.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether no byte is left.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The first `n` bytes were sent: the region starts after them (engines).
    ///
    /// ```
    /// # let file = std::sync::Arc::new(std::fs::File::open("/dev/null").unwrap());
    /// let mut region = iomux_proto::FileRegion::new(file, 10, 100);
    /// region.advance(30);
    /// assert_eq!((region.offset(), region.len()), (40, 70));
    /// ```
    pub fn advance(&mut self, n: u64) {
        let n = n.min(self.len);
        self.offset += n;
        self.len -= n;
    }

    /// Read the region's first bytes into `buf` (at most its length) without
    /// moving it: a positioned read, so regions of one file shared by many
    /// connections never disturb each other. 0 with bytes left means the
    /// file ended early (it shrank).
    pub fn read_at(&self, buf: &mut [u8]) -> io::Result<usize> {
        let want = buf
            .len()
            .min(usize::try_from(self.len).unwrap_or(usize::MAX));
        loop {
            match self.file.read_at(&mut buf[..want], self.offset) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                other => return other,
            }
        }
    }
}
