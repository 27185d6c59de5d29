//! Recordings in blob storage, through `object_store`: a local directory by default, any
//! S3-compatible store at scale (`s3://bucket/prefix`, credentials from the usual `AWS_*`
//! environment variables). Uploads stream the file in parts (`BufWriter`), so a long show is
//! never held in memory.

use futures::StreamExt;
use object_store::buffered::BufWriter;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt};
use std::path::Path;
use std::sync::Arc;
use tokio::io::AsyncWriteExt;

#[derive(Debug, thiserror::Error)]
pub enum RecordingError {
    #[error("blob storage: {0}")]
    Store(#[from] object_store::Error),
    #[error("recording storage URL: {0}")]
    Url(String),
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
}

/// Where recordings are kept.
#[derive(Clone)]
pub struct RecordingStore {
    store: Arc<dyn ObjectStore>,
    prefix: ObjectPath,
}

/// A stored recording.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredRecording {
    pub key: String,
    pub bytes: u64,
}

impl RecordingStore {
    /// Recordings under a local directory (made if missing).
    pub fn local(dir: &Path) -> Result<RecordingStore, RecordingError> {
        std::fs::create_dir_all(dir)?;
        Ok(RecordingStore {
            store: Arc::new(object_store::local::LocalFileSystem::new_with_prefix(dir)?),
            prefix: ObjectPath::default(),
        })
    }

    /// Recordings at `url`: `file:///dir`, `s3://bucket/prefix`, and the other schemes
    /// `object_store` knows; options (region, endpoint, keys) come from `AWS_*` variables.
    pub fn from_url(url: &str) -> Result<RecordingStore, RecordingError> {
        let parsed =
            url::Url::parse(url).map_err(|error| RecordingError::Url(error.to_string()))?;
        if parsed.scheme() == "file" {
            let dir = parsed
                .to_file_path()
                .map_err(|()| RecordingError::Url(format!("{url} is not a file path")))?;
            return Self::local(&dir);
        }
        let options: Vec<(String, String)> = std::env::vars()
            .filter(|(name, _)| name.starts_with("AWS_"))
            .map(|(name, value)| (name.to_ascii_lowercase(), value))
            .collect();
        let (store, prefix) = object_store::parse_url_opts(&parsed, options)?;
        Ok(RecordingStore {
            store: Arc::from(store),
            prefix,
        })
    }

    fn path(&self, key: &str) -> ObjectPath {
        let mut path = self.prefix.clone();
        for part in key.split('/') {
            path = path.clone().join(part);
        }
        path
    }

    /// Uploads the file at `file` as `key`.
    pub async fn upload(&self, key: &str, file: &Path) -> Result<StoredRecording, RecordingError> {
        let mut source = tokio::fs::File::open(file).await?;
        let mut writer = BufWriter::new(Arc::clone(&self.store), self.path(key));
        let bytes = tokio::io::copy(&mut source, &mut writer).await?;
        writer.shutdown().await?;
        Ok(StoredRecording {
            key: key.to_string(),
            bytes,
        })
    }

    /// The recording's bytes, as a stream of chunks.
    pub async fn open(
        &self,
        key: &str,
    ) -> Result<
        (
            u64,
            futures::stream::BoxStream<'static, Result<bytes::Bytes, RecordingError>>,
        ),
        RecordingError,
    > {
        let got = self.store.get(&self.path(key)).await?;
        let size = got.meta.size;
        Ok((
            size,
            got.into_stream()
                .map(|chunk| chunk.map_err(RecordingError::from))
                .boxed(),
        ))
    }
}

impl std::fmt::Debug for RecordingStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RecordingStore({})", self.store)
    }
}
