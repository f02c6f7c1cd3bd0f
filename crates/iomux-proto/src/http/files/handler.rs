//! [`StaticFiles`] as a [`Handler`]: the request's fields in, the response
//! out through the public [`Reply`] API, file bytes as file regions.

use super::range::Piece;
use super::{FileBody, FileRequest, StaticFiles};
use crate::http::{Flow, Handler, Reply, Request, Status};
use crate::FileRegion;

impl Handler for StaticFiles {
    fn call(&self, req: &Request<'_>, reply: &mut Reply<'_, '_>) -> Flow {
        let mut request = FileRequest {
            method: req.method().as_bytes(),
            path: req.path(),
            query: req.query(),
            ..FileRequest::default()
        };
        // One pass over the fields (a request names few, and most of these
        // none), keeping the first of each as `Request::header` would.
        for (name, value) in req.headers() {
            let conditionals = &mut request.conditionals;
            let slot = match name.len() {
                5 if name.eq_ignore_ascii_case("range") => &mut request.range,
                8 if name.eq_ignore_ascii_case("if-match") => &mut conditionals.if_match,
                8 if name.eq_ignore_ascii_case("if-range") => &mut conditionals.if_range,
                13 if name.eq_ignore_ascii_case("if-none-match") => &mut conditionals.if_none_match,
                15 if name.eq_ignore_ascii_case("accept-encoding") => &mut request.accept_encoding,
                17 if name.eq_ignore_ascii_case("if-modified-since") => {
                    &mut conditionals.if_modified_since
                }
                19 if name.eq_ignore_ascii_case("if-unmodified-since") => {
                    &mut conditionals.if_unmodified_since
                }
                _ => continue,
            };
            slot.get_or_insert(value);
        }
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
