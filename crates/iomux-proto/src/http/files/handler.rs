//! [`StaticFiles`] as a [`Handler`]: the request's fields in, the response
//! out through the public [`Reply`] API, file bytes as file regions.

use super::range::Piece;
use super::validators::Conditionals;
use super::{FileBody, FileRequest, StaticFiles};
use crate::http::{Flow, Handler, Reply, Request, Status};
use crate::FileRegion;

impl Handler for StaticFiles {
    fn call(&self, req: &Request<'_>, reply: &mut Reply<'_, '_>) -> Flow {
        let request = FileRequest {
            method: req.method().as_bytes(),
            path: req.path(),
            query: req.query(),
            conditionals: Conditionals {
                if_match: req.header("if-match"),
                if_unmodified_since: req.header("if-unmodified-since"),
                if_none_match: req.header("if-none-match"),
                if_modified_since: req.header("if-modified-since"),
                if_range: req.header("if-range"),
            },
            range: req.header("range"),
            accept_encoding: req.header("accept-encoding"),
        };
        let response = self.respond(&request);
        let status = Status::from_code(response.status).unwrap_or(Status::INTERNAL_SERVER_ERROR);
        let mut head = reply.head(status);
        match response.prepared_headers() {
            Some(fields) => head = head.headers(fields),
            None => {
                for (name, value) in response.headers() {
                    head = head.header(name, value);
                }
            }
        }
        match response.body {
            FileBody::Empty => head.body(b""),
            FileBody::Bytes(bytes) => head.body(&bytes),
            FileBody::Shared { bytes, range } => {
                head.body(&bytes[range.start as usize..range.end as usize])
            }
            FileBody::File { file, range } => {
                head.file(FileRegion::new(file, range.start, range.len()))
            }
            FileBody::Multipart { file, pieces } => {
                head.sized(super::range::pieces_len(&pieces));
                for piece in pieces {
                    match piece {
                        Piece::Bytes(bytes) => reply.write(&bytes),
                        Piece::File(range) => reply.write_file(FileRegion::new(
                            file.clone(),
                            range.start,
                            range.len(),
                        )),
                    }
                }
            }
        }
        Flow::Done
    }
}
