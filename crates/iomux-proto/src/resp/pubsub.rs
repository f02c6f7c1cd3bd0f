//! Publish/subscribe without I/O: which connections listen on which channel,
//! and the exact RESP2 frames Redis sends.
//!
//! Delivering a message to another connection is the engine's job: the
//! registry hands each frame to [`Context::send_to_many`] with the
//! subscribers' connection ids; a subscriber that stops reading is the
//! engine's to bound.

use super::reply;
use crate::{ConnId, Context};
use std::collections::{HashMap, HashSet};
use std::sync::{Mutex, PoisonError};

/// Channel → subscriber ids, shared by every connection of a server.
#[derive(Debug, Default)]
pub struct PubSub {
    channels: Mutex<HashMap<Box<[u8]>, HashSet<ConnId>>>,
}

impl PubSub {
    /// An empty registry.
    pub fn new() -> PubSub {
        PubSub::default()
    }

    /// Adds `subscriber` to `channel`; false if it was there already.
    pub fn subscribe(&self, subscriber: ConnId, channel: &[u8]) -> bool {
        let mut channels = self.channels.lock().unwrap_or_else(PoisonError::into_inner);
        match channels.get_mut(channel) {
            Some(ids) => ids.insert(subscriber),
            None => {
                channels.insert(channel.into(), HashSet::from([subscriber]));
                true
            }
        }
    }

    /// Removes `subscriber` from `channel`; false if it was not there.
    pub fn unsubscribe(&self, subscriber: ConnId, channel: &[u8]) -> bool {
        let mut channels = self.channels.lock().unwrap_or_else(PoisonError::into_inner);
        let Some(ids) = channels.get_mut(channel) else {
            return false;
        };
        let removed = ids.remove(&subscriber);
        if ids.is_empty() {
            channels.remove(channel);
        }
        removed
    }

    /// Subscribers of `channel`.
    pub fn subscribers(&self, channel: &[u8]) -> usize {
        let channels = self.channels.lock().unwrap_or_else(PoisonError::into_inner);
        channels.get(channel).map_or(0, HashSet::len)
    }

    /// Sends `message` to every subscriber of `channel` through `cx` (the
    /// frame is built once and shared by all of them); returns how many
    /// subscribers it was sent to.
    pub fn publish(&self, channel: &[u8], message: &[u8], cx: &mut Context) -> usize {
        let channels = self.channels.lock().unwrap_or_else(PoisonError::into_inner);
        let Some(ids) = channels.get(channel) else {
            return 0;
        };
        let mut frame = Vec::with_capacity(channel.len() + message.len() + 32);
        message_frame(&mut frame, channel, message);
        cx.send_to_many(ids.iter().copied(), &frame);
        ids.len()
    }
}

/// `*3 message <channel> <message>`: what a subscriber receives.
pub fn message_frame(out: &mut Vec<u8>, channel: &[u8], message: &[u8]) {
    reply::array(out, 3);
    reply::bulk(out, b"message");
    reply::bulk(out, channel);
    reply::bulk(out, message);
}

/// `*3 subscribe|unsubscribe <channel or nil> <count>`: the confirmation of
/// one channel, with the connection's channel count after it.
pub fn confirmation_frame(out: &mut Vec<u8>, kind: &str, channel: Option<&[u8]>, count: usize) {
    reply::array(out, 3);
    reply::bulk(out, kind.as_bytes());
    match channel {
        Some(c) => reply::bulk(out, c),
        None => out.extend_from_slice(reply::NIL),
    }
    reply::integer(out, count as i64);
}
