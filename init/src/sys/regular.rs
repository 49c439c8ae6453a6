//! Files that must be plain files: opened without ever blocking, never
//! through a symlink where that matters, checked with fstat. Apart from
//! the rest of sys.rs so the fuzz targets can compile it alone.

use nix::libc;
use std::path::Path;

/// How [`open_regular`] opens a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpenAs {
    /// Read-only; a symlink is followed (service files, init.yaml, the
    /// NSM driver: trusted configuration, where links are common).
    Read,
    /// Read-only, never through a symlink (log files).
    ReadNoFollow,
    /// Append, created 0644 if missing, never through a symlink (log files).
    Append,
}

/// Open `path` as a plain file without ever blocking: O_NONBLOCK (a FIFO
/// would otherwise block `open` until its other end is opened), O_CLOEXEC,
/// O_NOFOLLOW unless [`OpenAs::Read`]; then `fstat`, and anything but a
/// regular file is refused ("not a regular file (a FIFO)").
pub fn open_regular(path: &Path, how: OpenAs) -> std::io::Result<std::fs::File> {
    use std::fs::OpenOptions;
    use std::os::unix::fs::OpenOptionsExt;
    let mut opts = OpenOptions::new();
    let mut flags = libc::O_NONBLOCK;
    match how {
        OpenAs::Read => {
            opts.read(true);
        }
        OpenAs::ReadNoFollow => {
            opts.read(true);
            flags |= libc::O_NOFOLLOW;
        }
        OpenAs::Append => {
            opts.append(true).create(true).mode(0o644);
            flags |= libc::O_NOFOLLOW;
        }
    }
    let f = opts.custom_flags(flags).open(path).map_err(|e| {
        match e.raw_os_error() {
            Some(libc::ELOOP) if how != OpenAs::Read => {
                refused("a symbolic link, which is not followed")
            }
            // O_WRONLY|O_NONBLOCK on a FIFO nobody reads (or a device
            // without its driver).
            Some(libc::ENXIO) => refused("a FIFO or device file"),
            _ => e,
        }
    })?;
    let kind = f.metadata()?.file_type();
    if kind.is_file() {
        return Ok(f);
    }
    use std::os::unix::fs::FileTypeExt;
    Err(refused(if kind.is_fifo() {
        "a FIFO"
    } else if kind.is_char_device() {
        "a character device"
    } else if kind.is_block_device() {
        "a block device"
    } else if kind.is_dir() {
        "a directory"
    } else if kind.is_socket() {
        "a socket"
    } else {
        "not a file"
    }))
}

fn refused(what: &str) -> std::io::Error {
    std::io::Error::new(
        std::io::ErrorKind::InvalidInput,
        format!("not a regular file ({what})"),
    )
}

/// The whole text of a plain file ([`open_regular`] with [`OpenAs::Read`])
/// of at most `max` bytes; a larger one is refused without reading it all.
pub fn read_regular(path: &Path, max: u64) -> std::io::Result<String> {
    use std::io::Read;
    let f = open_regular(path, OpenAs::Read)?;
    let too_big = || {
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("larger than {max} bytes"),
        )
    };
    let len = f.metadata()?.len();
    if len > max {
        return Err(too_big());
    }
    let mut buf = Vec::with_capacity(usize::try_from(len).unwrap_or(0));
    // The file may grow while being read: never more than max + 1 bytes.
    f.take(max.saturating_add(1)).read_to_end(&mut buf)?;
    if buf.len() as u64 > max {
        return Err(too_big());
    }
    String::from_utf8(buf)
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidData, "not valid UTF-8"))
}
