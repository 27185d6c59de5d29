//! Zero-copy segment serving: the kernel sends a cached segment's bytes from its file with
//! `sendfile(2)`, as nginx does, while hyper goes on writing responses as usual.
//!
//! Why: a live show's viewers all fetch the same few segments, so the origin's work is mostly
//! moving segment bytes onto sockets. Written from user space, each byte is copied once into
//! the socket's buffers; `sendfile` hands the kernel the file's page-cache pages instead. On
//! 200 KB segments that copy was what kept the origin at ~0.7 of nginx's requests/s
//! (`marquee-bench live`, BENCHMARKS.md). hyper has no sendfile of its own: it writes a body's
//! `Bytes` with `writev`. So the bytes of a cached segment stay an ordinary `Bytes` (every
//! other path — HTTP/2, tests that call the router directly — reads them from memory), and
//! the connection's IO, [`ZeroCopyStream`], recognises a write whose buffer lies inside a
//! segment registered by [`file_backed`] and sends that range from the file instead.
//!
//! The file must hold what the memory holds: segments are renamed into place once whole and
//! never rewritten (see `marquee_media::transcode`), and deleting one leaves the open file
//! readable. Should a file still come up short (truncated behind our back), the write falls
//! back to the bytes in memory, so a response is never cut or corrupted by it.
//!
//! Everything here is safe Rust: `rustix` makes the system calls; the registry compares
//! addresses, it never dereferences them.

use bytes::Bytes;
use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, IoSlice};
use std::os::fd::AsFd;
use std::pin::Pin;
use std::sync::{Arc, LazyLock, RwLock};
use std::task::{ready, Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, Interest, ReadBuf};
use tokio::net::TcpStream;

/// Registered segments by the address of their first byte in memory.
static REGISTRY: LazyLock<RwLock<BTreeMap<usize, Registered>>> =
    LazyLock::new(|| RwLock::new(BTreeMap::new()));

struct Registered {
    len: usize,
    file: Arc<File>,
}

/// `data` (the whole content of `file`, just read) as `Bytes` that a [`ZeroCopyStream`] sends
/// from `file`. The registration lasts as long as the last clone of the returned `Bytes`.
pub fn file_backed(data: Vec<u8>, file: File) -> Bytes {
    if data.is_empty() {
        return Bytes::new();
    }
    Bytes::from_owner(FileBacked::register(data, file))
}

/// Owns a segment's memory and keeps its registration alive.
struct FileBacked {
    data: Vec<u8>,
}

impl FileBacked {
    fn register(data: Vec<u8>, file: File) -> FileBacked {
        let entry = Registered {
            len: data.len(),
            file: Arc::new(file),
        };
        registry_write().insert(data.as_ptr() as usize, entry);
        FileBacked { data }
    }
}

impl AsRef<[u8]> for FileBacked {
    fn as_ref(&self) -> &[u8] {
        &self.data
    }
}

impl Drop for FileBacked {
    // Before the memory is freed, so an address is never looked up after it could be reused.
    fn drop(&mut self) {
        registry_write().remove(&(self.data.as_ptr() as usize));
    }
}

fn registry_write() -> std::sync::RwLockWriteGuard<'static, BTreeMap<usize, Registered>> {
    REGISTRY
        .write()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The file and offset holding `slice`, if it lies within a registered segment, and how many
/// of its bytes do.
fn lookup(slice: &[u8]) -> Option<(Arc<File>, u64, usize)> {
    if slice.is_empty() {
        return None;
    }
    let address = slice.as_ptr() as usize;
    let registry = REGISTRY
        .read()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let (start, entry) = registry.range(..=address).next_back()?;
    let offset = address - start;
    if offset >= entry.len {
        return None;
    }
    let len = slice.len().min(entry.len - offset);
    Some((entry.file.clone(), offset as u64, len))
}

/// Bytes sent from files, for `marquee_media_sendfile_bytes_total`.
fn count_sent(bytes: usize) {
    metrics::counter!("marquee_media_sendfile_bytes_total").increment(bytes as u64);
}

/// A TCP connection whose writes of registered segments go out with `sendfile`.
#[derive(Debug)]
pub struct ZeroCopyStream {
    inner: TcpStream,
    /// Bytes already read from the socket by a lean path (`crate::media_listener`) that then
    /// handed the connection to hyper: read again before anything new.
    unread: Bytes,
}

impl ZeroCopyStream {
    pub fn new(inner: TcpStream) -> ZeroCopyStream {
        ZeroCopyStream {
            inner,
            unread: Bytes::new(),
        }
    }

    /// The same connection, with `unread` (read from it already) to be read again first: a
    /// lean path hands a connection to hyper this way.
    pub fn replaying(self, unread: Bytes) -> ZeroCopyStream {
        ZeroCopyStream { unread, ..self }
    }

    /// The connection, for socket options.
    pub fn get_ref(&self) -> &TcpStream {
        &self.inner
    }

    /// Runs `write` once the socket is writable, as often as the socket turns out not to be.
    fn poll_write_with(
        &self,
        cx: &mut Context<'_>,
        mut write: impl FnMut(&TcpStream) -> io::Result<usize>,
    ) -> Poll<io::Result<usize>> {
        loop {
            ready!(self.inner.poll_write_ready(cx))?;
            match self.inner.try_io(Interest::WRITABLE, || write(&self.inner)) {
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => continue,
                done => return Poll::Ready(done),
            }
        }
    }
}

impl AsyncRead for ZeroCopyStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if !self.unread.is_empty() {
            let n = self.unread.len().min(buf.remaining());
            let replayed = self.unread.split_to(n);
            buf.put_slice(&replayed);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for ZeroCopyStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.poll_write_vectored(cx, &[IoSlice::new(buf)])
    }

    /// One call sends either the buffers before the first registered one (the response head,
    /// marked `MSG_MORE` so it leaves in one packet with the body) or the registered one from
    /// its file. hyper calls again for the rest.
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let first_file = bufs.iter().position(|buf| lookup(buf).is_some());
        match first_file {
            None => Pin::new(&mut self.inner).poll_write_vectored(cx, bufs),
            Some(0) => {
                let Some((file, offset, len)) = lookup(&bufs[0]) else {
                    return Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
                };
                let sent = ready!(self.poll_write_with(cx, |socket| {
                    let mut offset = offset;
                    rustix::fs::sendfile(socket.as_fd(), file.as_fd(), Some(&mut offset), len)
                        .map_err(io::Error::from)
                }))?;
                if sent == 0 {
                    // The file is shorter than the memory says: send from memory.
                    return Pin::new(&mut self.inner).poll_write(cx, &bufs[0]);
                }
                count_sent(sent);
                Poll::Ready(Ok(sent))
            }
            Some(head) => self.poll_write_with(cx, |socket| {
                rustix::net::sendmsg(
                    socket,
                    &bufs[..head],
                    &mut rustix::net::SendAncillaryBuffer::default(),
                    rustix::net::SendFlags::MORE | rustix::net::SendFlags::NOSIGNAL,
                )
                .map_err(io::Error::from)
            }),
        }
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// An axum listener whose connections are [`ZeroCopyStream`]s.
pub struct ZeroCopyListener<L> {
    inner: L,
}

/// Wraps `listener` so that cached segments go out with `sendfile`.
pub fn zero_copy<L>(listener: L) -> ZeroCopyListener<L>
where
    L: axum::serve::Listener<Io = TcpStream>,
{
    ZeroCopyListener { inner: listener }
}

impl<L> axum::serve::Listener for ZeroCopyListener<L>
where
    L: axum::serve::Listener<Io = TcpStream>,
{
    type Io = ZeroCopyStream;
    type Addr = L::Addr;

    async fn accept(&mut self) -> (ZeroCopyStream, L::Addr) {
        let (stream, addr) = self.inner.accept().await;
        (ZeroCopyStream::new(stream), addr)
    }

    fn local_addr(&self) -> io::Result<L::Addr> {
        self.inner.local_addr()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A file of `len` bytes of a pattern, and the same bytes file-backed.
    fn segment(dir: &std::path::Path, name: &str, len: usize) -> (std::path::PathBuf, Bytes) {
        let data: Vec<u8> = (0..len).map(|index| (index * 7 % 251) as u8).collect();
        let path = dir.join(name);
        std::fs::write(&path, &data).expect("write segment");
        let mut file = File::open(&path).expect("open segment");
        let mut read = Vec::new();
        file.read_to_end(&mut read).expect("read segment");
        (path, file_backed(read, file))
    }

    async fn connected() -> (ZeroCopyStream, TcpStream) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let client = TcpStream::connect(listener.local_addr().expect("addr"))
            .await
            .expect("connect");
        let (server, _) = listener.accept().await.expect("accept");
        (ZeroCopyStream::new(server), client)
    }

    /// Writes `head` then `body` the way hyper does (vectored, resuming after partial
    /// writes) while the peer reads; returns what the peer read.
    async fn send(
        mut stream: ZeroCopyStream,
        mut peer: TcpStream,
        head: &[u8],
        body: Bytes,
    ) -> Vec<u8> {
        let expected = head.len() + body.len();
        let reader = tokio::spawn(async move {
            let mut received = vec![0u8; expected];
            peer.read_exact(&mut received).await.expect("read all");
            received
        });
        let mut written = 0;
        while written < expected {
            let slices: Vec<IoSlice<'_>> = if written < head.len() {
                vec![IoSlice::new(&head[written..]), IoSlice::new(&body)]
            } else {
                vec![IoSlice::new(&body[written - head.len()..])]
            };
            let n =
                std::future::poll_fn(|cx| Pin::new(&mut stream).poll_write_vectored(cx, &slices))
                    .await
                    .expect("write");
            assert!(n > 0, "a write made no progress");
            written += n;
        }
        stream.flush().await.expect("flush");
        reader.await.expect("reader")
    }

    #[tokio::test]
    async fn a_registered_segment_is_sent_whole_after_its_head() {
        let dir = tempfile::tempdir().expect("tempdir");
        // Larger than a socket buffer takes at once, so sends are partial and resume mid-file.
        let (_, body) = segment(dir.path(), "seg.m4s", 3 * 1024 * 1024 + 17);
        let head = b"HTTP/1.1 200 OK\r\ncontent-length: 3145745\r\n\r\n".to_vec();
        let (stream, peer) = connected().await;
        let received = send(stream, peer, &head, body.clone()).await;
        assert_eq!(&received[..head.len()], &head[..]);
        assert!(
            received[head.len()..] == body[..],
            "the body differs from the segment"
        );
    }

    #[tokio::test]
    async fn a_write_inside_a_segment_is_found_and_a_foreign_one_is_not() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (_, body) = segment(dir.path(), "seg.m4s", 1000);
        let (file, offset, len) = lookup(&body[100..400]).expect("inside the segment");
        assert_eq!((offset, len), (100, 300));
        assert_eq!(file.metadata().expect("metadata").len(), 1000);
        let elsewhere = body.to_vec();
        assert!(lookup(&elsewhere).is_none(), "a copy is not the segment");
        let address = body.as_ptr() as usize;
        drop(body);
        let registry = REGISTRY.read().expect("registry");
        assert!(
            !registry.contains_key(&address),
            "the last clone's drop ends the registration"
        );
    }

    #[tokio::test]
    async fn a_file_truncated_behind_the_cache_is_sent_from_memory() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (path, body) = segment(dir.path(), "seg.m4s", 256 * 1024);
        // Truncate the very file the registration holds open.
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .expect("open for writing");
        file.set_len(1000).expect("truncate");
        file.flush().expect("flush");
        let head = b"HTTP/1.1 200 OK\r\n\r\n".to_vec();
        let (stream, peer) = connected().await;
        let received = send(stream, peer, &head, body.clone()).await;
        assert!(
            received[head.len()..] == body[..],
            "the body differs from memory"
        );
    }

    #[tokio::test]
    async fn bytes_read_before_a_hand_off_are_read_again_before_the_socket() {
        let (stream, mut peer) = connected().await;
        peer.write_all(b" and then the socket")
            .await
            .expect("write");
        let mut resumed =
            ZeroCopyStream::new(stream.inner).replaying(Bytes::from_static(b"read already"));
        let mut small = [0u8; 4];
        resumed.read_exact(&mut small).await.expect("read");
        assert_eq!(&small, b"read", "a short read takes only what fits");
        let mut rest = vec![0u8; "already and then the socket".len() + 1];
        resumed.read_exact(&mut rest).await.expect("read");
        assert_eq!(&rest, b" already and then the socket");
    }
}
