//! The RESP floor: the least a server can answer so that `redis-benchmark -t
//! set,get` and bench/redis_peers.py's pub/sub fan-out accept it.
//!
//! It keeps no store: SET answers `+OK`, GET a fixed 3-byte value (the size
//! redis-benchmark writes by default), PING `+PONG`, CONFIG GET the two
//! settings redis-benchmark reads at start. SUBSCRIBE and PUBLISH are real:
//! a PUBLISH's frame goes to every live subscriber of its channel, and the
//! frames published during one read reach each subscriber in one send.
//! Not conforming: input is assumed well formed, a repeated SUBSCRIBE to the
//! same channel subscribes twice, UNSUBSCRIBE and other commands are errors.

use std::collections::HashMap;
use std::os::fd::RawFd;

pub(crate) const SET_REPLY: &[u8] = b"+OK\r\n";
/// redis-benchmark's default value: 3 bytes of `x` (`-d 3`).
pub(crate) const GET_REPLY: &[u8] = b"$3\r\nxxx\r\n";
const PONG: &[u8] = b"+PONG\r\n";
const UNKNOWN: &[u8] =
    b"-ERR unknown command (floor-peer answers SET, GET, PING, CONFIG GET, SUBSCRIBE, PUBLISH)\r\n";

/// The arguments of a command the floor looks at (name and the first two).
const ARGS_KEPT: usize = 3;

/// One subscriber: the connection and the generation its descriptor had when
/// it subscribed (a closed and reused descriptor is no longer subscribed).
#[derive(Clone, Copy)]
pub(crate) struct Subscriber {
    pub(crate) fd: RawFd,
    generation: u32,
}

/// The server's state: channels and their subscribers, and per descriptor
/// its generation and how many channels it subscribed to.
#[derive(Default)]
pub(crate) struct Hub {
    channels: HashMap<Vec<u8>, Vec<Subscriber>>,
    generations: Vec<u32>,
    subscriptions: Vec<u32>,
    /// Per channel, the frames published during the current read (delivered
    /// after it, one send per subscriber).
    published: Vec<(Vec<u8>, Vec<u8>)>,
}

impl Hub {
    /// A descriptor was accepted or closed: subscriptions under it end.
    pub(crate) fn renew(&mut self, fd: RawFd) {
        let fd = fd as usize;
        if self.generations.len() <= fd {
            self.generations.resize(fd + 1, 0);
            self.subscriptions.resize(fd + 1, 0);
        }
        self.generations[fd] = self.generations[fd].wrapping_add(1);
        self.subscriptions[fd] = 0;
    }

    /// Answers every complete command at the front of `data` (read from
    /// `fd`) into `out`; returns how many bytes they took (the rest is an
    /// incomplete command to read again with its remainder).
    pub(crate) fn serve(&mut self, fd: RawFd, data: &[u8], out: &mut Vec<u8>) -> usize {
        let mut used = 0;
        let mut args: [&[u8]; ARGS_KEPT] = [&[]; ARGS_KEPT];
        while let Some((len, argc)) = next_command(&data[used..], &mut args) {
            used += len;
            if argc > 0 {
                self.answer(fd, &args[..argc.min(ARGS_KEPT)], argc, out);
            }
        }
        used
    }

    fn answer(&mut self, fd: RawFd, args: &[&[u8]], argc: usize, out: &mut Vec<u8>) {
        let name = args[0];
        if name.eq_ignore_ascii_case(b"GET") {
            out.extend_from_slice(GET_REPLY);
        } else if name.eq_ignore_ascii_case(b"SET") {
            out.extend_from_slice(SET_REPLY);
        } else if name.eq_ignore_ascii_case(b"PING") {
            out.extend_from_slice(PONG);
        } else if name.eq_ignore_ascii_case(b"PUBLISH") && argc == 3 {
            let receivers = self.publish(args[1], args[2]);
            out.extend_from_slice(format!(":{receivers}\r\n").as_bytes());
        } else if name.eq_ignore_ascii_case(b"SUBSCRIBE") && argc == 2 {
            // Only the first channel is kept (ARGS_KEPT): one per command here.
            self.subscribe(fd, args[1], out);
        } else if name.eq_ignore_ascii_case(b"CONFIG")
            && argc == 3
            && args[1].eq_ignore_ascii_case(b"GET")
        {
            // redis-benchmark reads `save` and `appendonly` before it starts.
            let value: &[u8] = if args[2].eq_ignore_ascii_case(b"appendonly") {
                b"no"
            } else {
                b""
            };
            if args[2].eq_ignore_ascii_case(b"save") || args[2].eq_ignore_ascii_case(b"appendonly")
            {
                out.extend_from_slice(b"*2\r\n");
                bulk(out, args[2]);
                bulk(out, value);
            } else {
                out.extend_from_slice(b"*0\r\n");
            }
        } else {
            out.extend_from_slice(UNKNOWN);
        }
    }

    fn subscribe(&mut self, fd: RawFd, channel: &[u8], out: &mut Vec<u8>) {
        let subscriber = Subscriber {
            fd,
            generation: self.generations[fd as usize],
        };
        match self.channels.get_mut(channel) {
            Some(subscribers) => subscribers.push(subscriber),
            None => {
                self.channels.insert(channel.to_vec(), vec![subscriber]);
            }
        }
        self.subscriptions[fd as usize] += 1;
        out.extend_from_slice(b"*3\r\n$9\r\nsubscribe\r\n");
        bulk(out, channel);
        out.extend_from_slice(format!(":{}\r\n", self.subscriptions[fd as usize]).as_bytes());
    }

    /// Queues the message frame for the channel's subscribers; returns how many.
    fn publish(&mut self, channel: &[u8], message: &[u8]) -> usize {
        let Some(subscribers) = self.channels.get_mut(channel) else {
            return 0;
        };
        let generations = &self.generations;
        subscribers.retain(|s| generations[s.fd as usize] == s.generation);
        let receivers = subscribers.len();
        if receivers == 0 {
            return 0;
        }
        let frames = match self.published.iter_mut().position(|(c, _)| c == channel) {
            Some(i) => &mut self.published[i].1,
            None => {
                self.published.push((channel.to_vec(), Vec::new()));
                &mut self.published.last_mut().expect("just pushed").1
            }
        };
        frames.extend_from_slice(b"*3\r\n$7\r\nmessage\r\n");
        bulk(frames, channel);
        bulk(frames, message);
        receivers
    }

    /// Hands the frames published during the last read, with the
    /// subscribers of their channel, to `send`; then forgets them.
    pub(crate) fn deliver(&mut self, mut send: impl FnMut(&[u8], &[Subscriber])) {
        for (channel, frames) in &self.published {
            send(frames, &self.channels[channel]);
        }
        self.published.clear();
    }
}

fn bulk(out: &mut Vec<u8>, value: &[u8]) {
    out.extend_from_slice(format!("${}\r\n", value.len()).as_bytes());
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// The first complete command in `data`: its length in bytes and how many
/// arguments it has (the first ARGS_KEPT of them in `args`); None when
/// `data` ends before the command does. A blank inline line has 0 arguments.
fn next_command<'a>(data: &'a [u8], args: &mut [&'a [u8]; ARGS_KEPT]) -> Option<(usize, usize)> {
    if *data.first()? != b'*' {
        // Inline: words up to the end of the line.
        let end = data.iter().position(|&b| b == b'\n')?;
        let line = data[..end].strip_suffix(b"\r").unwrap_or(&data[..end]);
        let mut argc = 0;
        for word in line.split(|&b| b == b' ').filter(|w| !w.is_empty()) {
            if argc < ARGS_KEPT {
                args[argc] = word;
            }
            argc += 1;
        }
        return Some((end + 1, argc));
    }
    let (argc, mut at) = number(data, 1)?;
    let mut slots = args.iter_mut();
    for _ in 0..argc {
        if *data.get(at)? != b'$' {
            return None; // not well formed: wait for more (the floor assumes it never happens)
        }
        let (len, start) = number(data, at + 1)?;
        let end = start + len;
        if data.len() < end + 2 {
            return None;
        }
        if let Some(slot) = slots.next() {
            *slot = &data[start..end];
        }
        at = end + 2;
    }
    Some((at, argc))
}

/// The decimal number at `data[at..]` ended by CRLF, and where its line ends.
fn number(data: &[u8], at: usize) -> Option<(usize, usize)> {
    let mut n = 0usize;
    let mut i = at;
    loop {
        let b = *data.get(i)?;
        if b == b'\r' {
            return if data.len() > i + 1 {
                Some((n, i + 2))
            } else {
                None
            };
        }
        n = n
            .saturating_mul(10)
            .saturating_add(usize::from(b.wrapping_sub(b'0')));
        i += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn serve_all(hub: &mut Hub, fd: RawFd, input: &[u8]) -> (usize, Vec<u8>) {
        let mut out = Vec::new();
        let used = hub.serve(fd, input, &mut out);
        (used, out)
    }

    #[test]
    fn answers_benchmark_commands_and_keeps_partial_ones() {
        let mut hub = Hub::default();
        hub.renew(5);
        let set = b"*3\r\n$3\r\nSET\r\n$16\r\nkey:__rand_int__\r\n$3\r\nxxx\r\n";
        let get = b"*2\r\n$3\r\nGET\r\n$16\r\nkey:__rand_int__\r\n";
        let mut input = Vec::new();
        input.extend_from_slice(set);
        input.extend_from_slice(get);
        input.extend_from_slice(b"PING\r\n");
        input.extend_from_slice(&set[..10]);
        let (used, out) = serve_all(&mut hub, 5, &input);
        assert_eq!(used, set.len() + get.len() + 6);
        assert_eq!(out, b"+OK\r\n$3\r\nxxx\r\n+PONG\r\n");
        // Every split of a command is incomplete until its last byte.
        for cut in 0..set.len() {
            assert_eq!(serve_all(&mut hub, 5, &set[..cut]).0, 0, "cut at {cut}");
        }
    }

    #[test]
    fn config_get_answers_what_redis_benchmark_reads() {
        let mut hub = Hub::default();
        hub.renew(5);
        let input = b"*3\r\n$6\r\nCONFIG\r\n$3\r\nGET\r\n$4\r\nsave\r\n*3\r\n$6\r\nCONFIG\r\n$3\r\nGET\r\n$10\r\nappendonly\r\n";
        let (used, out) = serve_all(&mut hub, 5, input);
        assert_eq!(used, input.len());
        assert_eq!(
            out,
            b"*2\r\n$4\r\nsave\r\n$0\r\n\r\n*2\r\n$10\r\nappendonly\r\n$2\r\nno\r\n"
        );
    }

    #[test]
    fn publish_reaches_live_subscribers_only() {
        let mut hub = Hub::default();
        for fd in [5, 6, 7] {
            hub.renew(fd);
        }
        let subscribe = b"*2\r\n$9\r\nSUBSCRIBE\r\n$4\r\nnews\r\n";
        assert_eq!(
            serve_all(&mut hub, 5, subscribe).1,
            b"*3\r\n$9\r\nsubscribe\r\n$4\r\nnews\r\n:1\r\n"
        );
        serve_all(&mut hub, 6, subscribe);
        hub.renew(6); // closed (and maybe reused): no longer subscribed
        let publish = b"*3\r\n$7\r\nPUBLISH\r\n$4\r\nnews\r\n$2\r\nhi\r\n";
        let twice = [&publish[..], &publish[..]].concat();
        assert_eq!(serve_all(&mut hub, 7, &twice).1, b":1\r\n:1\r\n");
        let mut sent = Vec::new();
        hub.deliver(|frames, subscribers| {
            sent.extend(subscribers.iter().map(|s| (s.fd, frames.to_vec())));
        });
        let frame = b"*3\r\n$7\r\nmessage\r\n$4\r\nnews\r\n$2\r\nhi\r\n";
        assert_eq!(sent, vec![(5, [&frame[..], &frame[..]].concat())]);
        hub.deliver(|_, _| panic!("delivered twice"));
    }
}
