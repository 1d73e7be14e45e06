//! Moving a request body into an upload session while hashing it.
//!
//! The body is cut into large blocks; while one block is hashed (on a blocking thread)
//! and written, the next is read from the socket. On two cores this keeps hashing,
//! writing and receiving overlapped, which is what makes pushes fast.

use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;
use wharf_blobstore::{ByteStream, UploadWriter};
use wharf_oci::Hasher;

use crate::error::{RegistryError, Result};

const BLOCK: usize = 1 << 20;

/// Reads up to one block from `body`; `None` at its end.
async fn next_block(body: &mut ByteStream, carry: &mut Option<Bytes>) -> Result<Option<Bytes>> {
    let mut buf = BytesMut::new();
    if let Some(c) = carry.take() {
        if c.len() >= BLOCK {
            return Ok(Some(c)); // a large frame passes through without a copy
        }
        buf.extend_from_slice(&c);
    }
    while buf.len() < BLOCK {
        match body.next().await {
            None => break,
            Some(Err(e)) => return Err(RegistryError::BodyRead(e.to_string())),
            Some(Ok(chunk)) => {
                if buf.is_empty() && chunk.len() >= BLOCK {
                    return Ok(Some(chunk));
                }
                if buf.len() + chunk.len() > 2 * BLOCK {
                    *carry = Some(chunk);
                    break;
                }
                buf.extend_from_slice(&chunk);
            }
        }
    }
    Ok((!buf.is_empty()).then(|| buf.freeze()))
}

async fn hash_and_write(
    hasher: &mut Option<Hasher>,
    writer: &mut dyn UploadWriter,
    block: Bytes,
) -> Result<()> {
    let h = hasher.take();
    let for_hash = block.clone();
    let hashing = tokio::task::spawn_blocking(move || {
        h.map(|mut h| {
            h.update(&for_hash);
            h
        })
    });
    let (hashed, written) = tokio::join!(hashing, writer.write(block));
    *hasher = hashed.map_err(|e| RegistryError::Storage(e.to_string()))?;
    written?;
    Ok(())
}

/// Appends all of `body` to `writer`, feeding `hasher` (if the upload's hash state is
/// known). Returns the number of bytes appended.
pub(crate) async fn ingest(
    mut body: ByteStream,
    writer: &mut dyn UploadWriter,
    hasher: &mut Option<Hasher>,
) -> Result<u64> {
    let mut total = 0u64;
    let mut pending: Option<Bytes> = None;
    let mut carry: Option<Bytes> = None;
    loop {
        let work = async {
            match pending.take() {
                Some(block) => hash_and_write(hasher, writer, block).await,
                None => Ok(()),
            }
        };
        let (next, done) = tokio::join!(next_block(&mut body, &mut carry), work);
        done?;
        match next? {
            Some(block) => {
                total += block.len() as u64;
                pending = Some(block);
            }
            None => return Ok(total),
        }
    }
}
