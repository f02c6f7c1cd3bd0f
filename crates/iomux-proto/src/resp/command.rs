//! The commands: lookup, arity, and what each one does to the keyspace and
//! answers, with Redis's error texts.

use super::db::{ExpireCondition, IncrError, SetCondition, SetExpiry, SetOptions, Ttl};
use super::parse::{parse_i64, Args};
use super::pubsub::confirmation_frame;
use super::{reply, Client};
use crate::Context;

pub(super) const NOT_INTEGER: &str = "ERR value is not an integer or out of range";
const SYNTAX: &str = "ERR syntax error";

/// Every command this server knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Cmd {
    Ping,
    Echo,
    Set,
    Get,
    Del,
    Exists,
    Incr,
    Decr,
    IncrBy,
    DecrBy,
    MGet,
    MSet,
    Expire,
    PExpire,
    Ttl,
    PTtl,
    DbSize,
    FlushAll,
    Select,
    Quit,
    Publish,
    Subscribe,
    Unsubscribe,
    Command,
    Config,
    Client,
}

/// Name as Redis spells it in errors, arity (n: exactly n arguments with the
/// name; -n: at least n), and the command.
pub(super) const COMMANDS: &[(&str, i32, Cmd)] = &[
    ("get", 2, Cmd::Get),
    ("set", -3, Cmd::Set),
    ("ping", -1, Cmd::Ping),
    ("incr", 2, Cmd::Incr),
    ("mset", -3, Cmd::MSet),
    ("mget", -2, Cmd::MGet),
    ("del", -2, Cmd::Del),
    ("echo", 2, Cmd::Echo),
    ("exists", -2, Cmd::Exists),
    ("decr", 2, Cmd::Decr),
    ("incrby", 3, Cmd::IncrBy),
    ("decrby", 3, Cmd::DecrBy),
    ("expire", -3, Cmd::Expire),
    ("pexpire", -3, Cmd::PExpire),
    ("ttl", 2, Cmd::Ttl),
    ("pttl", 2, Cmd::PTtl),
    ("dbsize", 1, Cmd::DbSize),
    ("flushall", -1, Cmd::FlushAll),
    ("select", 2, Cmd::Select),
    ("quit", -1, Cmd::Quit),
    ("publish", 3, Cmd::Publish),
    ("subscribe", -2, Cmd::Subscribe),
    ("unsubscribe", -1, Cmd::Unsubscribe),
    ("command", -1, Cmd::Command),
    ("config", -2, Cmd::Config),
    ("client", -2, Cmd::Client),
];

/// What the connection does after a command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Flow {
    Continue,
    /// Close once the replies so far are sent (QUIT).
    Close,
}

fn lookup(name: &[u8]) -> Option<(&'static str, i32, Cmd)> {
    COMMANDS
        .iter()
        .find(|(n, _, _)| n.len() == name.len() && n.as_bytes().eq_ignore_ascii_case(name))
        .copied()
}

fn arity_ok(arity: i32, argc: usize) -> bool {
    if arity >= 0 {
        argc == arity as usize
    } else {
        argc >= arity.unsigned_abs() as usize
    }
}

fn wrong_arity(out: &mut Vec<u8>, name: &str) {
    reply::error(
        out,
        format!("ERR wrong number of arguments for '{name}' command"),
    );
}

/// Redis's "unknown command" error: the name and the first arguments, quoted,
/// each cut so the list stays near 128 bytes.
fn unknown_command(out: &mut Vec<u8>, args: &Args<'_>) {
    let mut text = b"ERR unknown command '".to_vec();
    let name = args.get(0);
    text.extend_from_slice(&name[..name.len().min(128)]);
    text.extend_from_slice(b"', with args beginning with: ");
    let mut listed = 0;
    for arg in args.iter().skip(1) {
        if listed >= 128 {
            break;
        }
        let take = arg.len().min(128 - listed);
        text.push(b'\'');
        text.extend_from_slice(&arg[..take]);
        text.extend_from_slice(b"' ");
        listed += take + 3;
    }
    reply::error(out, text);
}

fn unknown_subcommand(out: &mut Vec<u8>, sub: &[u8], command: &str) {
    let mut text = b"ERR unknown subcommand '".to_vec();
    text.extend_from_slice(&sub[..sub.len().min(128)]);
    text.extend_from_slice(format!("'. Try {command} HELP.").as_bytes());
    reply::error(out, text);
}

/// Milliseconds since the Unix epoch: Redis checks deadlines against it for
/// overflow, and so do we, so the same arguments are refused.
fn unix_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// A relative time to live in `unit_ms` units as milliseconds, refusing what
/// Redis refuses as "invalid expire time" (overflow once scaled or added to
/// the current Unix time).
fn ttl_millis(amount: i64, unit_ms: i64) -> Option<i64> {
    let ms = amount.checked_mul(unit_ms)?;
    ms.checked_add(unix_ms())?;
    Some(ms)
}

impl Client {
    /// Run one parsed command, appending its reply to `out`.
    pub(super) fn execute(&mut self, args: Args<'_>, cx: &mut Context, now: u64) -> Flow {
        let out = cx.out();
        let Some((name, arity, cmd)) = lookup(args.get(0)) else {
            unknown_command(out, &args);
            return Flow::Continue;
        };
        if !arity_ok(arity, args.len()) {
            wrong_arity(out, name);
            return Flow::Continue;
        }
        if self.subscribed()
            && !matches!(
                cmd,
                Cmd::Ping | Cmd::Quit | Cmd::Subscribe | Cmd::Unsubscribe
            )
        {
            reply::error(out, format!("ERR Can't execute '{name}': only (P|S)SUBSCRIBE / (P|S)UNSUBSCRIBE / PING / QUIT / RESET are allowed in this context"));
            return Flow::Continue;
        }
        let db = &self.shared.db;
        match cmd {
            Cmd::Get => db.get(args.get(1), now, |v| bulk_or_nil(out, v)),
            Cmd::Set => self.set(&args, out, now),
            Cmd::Ping => self.ping(&args, out),
            Cmd::Incr => incr(out, db.incr_by(args.get(1), 1, now)),
            Cmd::Decr => incr(out, db.incr_by(args.get(1), -1, now)),
            Cmd::IncrBy | Cmd::DecrBy => match parse_i64(args.get(2)) {
                None => reply::error(out, NOT_INTEGER),
                Some(i64::MIN) if cmd == Cmd::DecrBy => {
                    reply::error(out, "ERR decrement would overflow")
                }
                Some(n) => incr(
                    out,
                    db.incr_by(args.get(1), if cmd == Cmd::DecrBy { -n } else { n }, now),
                ),
            },
            Cmd::MSet => {
                if args.len() & 1 == 0 {
                    wrong_arity(out, name);
                } else {
                    let keys = args.iter().skip(1).step_by(2);
                    let values = args.iter().skip(2).step_by(2);
                    db.set_many(keys.zip(values), now);
                    out.extend_from_slice(reply::OK);
                }
            }
            Cmd::MGet => {
                reply::array(out, args.len() - 1);
                db.get_many(args.iter().skip(1), now, |v| bulk_or_nil(out, v));
            }
            Cmd::Del => {
                let n = if args.len() == 2 {
                    usize::from(db.del(args.get(1), now))
                } else {
                    db.del_many(args.iter().skip(1), now)
                };
                reply::integer(out, n as i64);
            }
            Cmd::Exists => {
                let n = if args.len() == 2 {
                    usize::from(db.exists(args.get(1), now))
                } else {
                    db.exists_many(args.iter().skip(1), now)
                };
                reply::integer(out, n as i64);
            }
            Cmd::Echo => reply::bulk(out, args.get(1)),
            Cmd::Expire => self.expire(&args, out, now, 1000, name),
            Cmd::PExpire => self.expire(&args, out, now, 1, name),
            Cmd::Ttl | Cmd::PTtl => match db.ttl(args.get(1), now) {
                Ttl::Missing => reply::integer(out, -2),
                Ttl::Persistent => reply::integer(out, -1),
                Ttl::Millis(ms) if cmd == Cmd::PTtl => reply::integer(out, ms as i64),
                // Redis rounds to the nearest second.
                Ttl::Millis(ms) => reply::integer(out, ((ms + 500) / 1000) as i64),
            },
            Cmd::DbSize => reply::integer(out, db.len() as i64),
            Cmd::FlushAll => {
                // ASYNC empties the keyspace now and frees it off the loop.
                let lazy = match args.len() {
                    1 => Some(false),
                    2 if args.get(1).eq_ignore_ascii_case(b"sync") => Some(false),
                    2 if args.get(1).eq_ignore_ascii_case(b"async") => Some(true),
                    _ => None,
                };
                match lazy {
                    Some(true) => drop(db.flush_async()),
                    Some(false) => db.flush(),
                    None => reply::error(out, SYNTAX),
                }
                if lazy.is_some() {
                    out.extend_from_slice(reply::OK);
                }
            }
            Cmd::Select => match parse_i64(args.get(1)) {
                Some(0) => out.extend_from_slice(reply::OK),
                Some(n) if i32::try_from(n).is_ok() => {
                    reply::error(out, "ERR DB index is out of range")
                }
                Some(_) => reply::error(
                    out,
                    "ERR value is out of range, value must between -2147483648 and 2147483647",
                ),
                None => reply::error(out, NOT_INTEGER),
            },
            Cmd::Quit => {
                out.extend_from_slice(reply::OK);
                return Flow::Close;
            }
            Cmd::Publish => {
                // Without delivery no subscriber exists: this answers 0.
                let reached = self.shared.pubsub.publish(args.get(1), args.get(2), cx);
                reply::integer(cx.out(), reached as i64);
            }
            Cmd::Subscribe => self.subscribe(&args, cx),
            Cmd::Unsubscribe => self.unsubscribe(&args, cx),
            Cmd::Command => command_command(&args, out),
            Cmd::Config => self.config(&args, out),
            Cmd::Client => self.client(&args, cx),
        }
        Flow::Continue
    }

    fn ping(&self, args: &Args<'_>, out: &mut Vec<u8>) {
        if args.len() > 2 {
            return wrong_arity(out, "ping");
        }
        let message = (args.len() == 2).then(|| args.get(1));
        if self.subscribed() {
            // RESP2 subscribers get a two-element array.
            reply::array(out, 2);
            reply::bulk(out, b"pong");
            reply::bulk(out, message.unwrap_or(b""));
        } else {
            match message {
                Some(m) => reply::bulk(out, m),
                None => reply::simple(out, "PONG"),
            }
        }
    }

    /// SET key value [NX|XX] [GET] [EX s|PX ms|KEEPTTL], parsed as Redis 7.0 does.
    fn set(&self, args: &Args<'_>, out: &mut Vec<u8>, now: u64) {
        let mut condition = SetCondition::Always;
        let mut get = false;
        let mut keep_ttl = false;
        let mut expire: Option<(&[u8], i64)> = None;
        let mut i = 3;
        while i < args.len() {
            let opt = args.get(i);
            let next = (i + 1 < args.len()).then(|| args.get(i + 1));
            let is = |word: &str| opt.eq_ignore_ascii_case(word.as_bytes());
            if is("nx") && condition != SetCondition::IfPresent {
                condition = SetCondition::IfAbsent;
            } else if is("xx") && condition != SetCondition::IfAbsent {
                condition = SetCondition::IfPresent;
            } else if is("get") {
                get = true;
            } else if is("keepttl") && expire.is_none() {
                keep_ttl = true;
            } else if is("ex")
                && !keep_ttl
                && matches!(expire, None | Some((_, 1000)))
                && next.is_some()
            {
                expire = next.map(|n| (n, 1000));
                i += 1;
            } else if is("px")
                && !keep_ttl
                && matches!(expire, None | Some((_, 1)))
                && next.is_some()
            {
                expire = next.map(|n| (n, 1));
                i += 1;
            } else {
                return reply::error(out, SYNTAX);
            }
            i += 1;
        }
        let expiry = match expire {
            None if keep_ttl => SetExpiry::Keep,
            None => SetExpiry::Clear,
            Some((text, unit)) => {
                let Some(amount) = parse_i64(text) else {
                    return reply::error(out, NOT_INTEGER);
                };
                match ttl_millis(amount, unit).filter(|_| amount > 0) {
                    Some(ms) => SetExpiry::At(now.saturating_add(ms as u64)),
                    None => return reply::error(out, "ERR invalid expire time in 'set' command"),
                }
            }
        };
        let (written, old) = self.shared.db.set(
            args.get(1),
            args.get(2),
            SetOptions {
                condition,
                expiry,
                get_old: get,
            },
            now,
        );
        if get {
            bulk_or_nil(out, old.as_deref());
        } else if written {
            out.extend_from_slice(reply::OK);
        } else {
            out.extend_from_slice(reply::NIL);
        }
    }

    /// EXPIRE / PEXPIRE key amount [NX|XX|GT|LT], as Redis 7.0.
    fn expire(&self, args: &Args<'_>, out: &mut Vec<u8>, now: u64, unit_ms: i64, name: &str) {
        let (mut nx, mut xx, mut gt, mut lt) = (false, false, false, false);
        for opt in args.iter().skip(3) {
            match opt.to_ascii_lowercase().as_slice() {
                b"nx" => nx = true,
                b"xx" => xx = true,
                b"gt" => gt = true,
                b"lt" => lt = true,
                _ => {
                    let mut text = b"ERR Unsupported option ".to_vec();
                    text.extend_from_slice(opt);
                    return reply::error(out, text);
                }
            }
        }
        if nx && (xx || gt || lt) {
            return reply::error(
                out,
                "ERR NX and XX, GT or LT options at the same time are not compatible",
            );
        }
        if gt && lt {
            return reply::error(
                out,
                "ERR GT and LT options at the same time are not compatible",
            );
        }
        let condition = if nx {
            ExpireCondition::IfNone
        } else if gt {
            ExpireCondition::IfGreater
        } else if lt {
            ExpireCondition::IfLess
        } else if xx {
            ExpireCondition::IfSome
        } else {
            ExpireCondition::Always
        };
        let Some(amount) = parse_i64(args.get(2)) else {
            return reply::error(out, NOT_INTEGER);
        };
        let Some(ms) = ttl_millis(amount, unit_ms) else {
            return reply::error(out, format!("ERR invalid expire time in '{name}' command"));
        };
        // A deadline not in the future deletes the key.
        let at = if ms <= 0 {
            now
        } else {
            now.saturating_add(ms as u64)
        };
        let changed = self.shared.db.expire_at(args.get(1), at, condition, now);
        reply::integer(out, i64::from(changed));
    }

    fn subscribe(&mut self, args: &Args<'_>, cx: &mut Context) {
        let (me, out) = (cx.id(), cx.out());
        if !self.shared.delivers() {
            return reply::error(
                out,
                "ERR SUBSCRIBE is not available on this server: its engine cannot deliver \
                 messages to other connections; run it on an event-loop engine (epoll, poll, \
                 select, sigio, uring-poll or uring) for pub/sub",
            );
        }
        let channels = self.channels.get_or_insert_with(Default::default);
        for channel in args.iter().skip(1) {
            if channels.insert(channel.into()) {
                self.shared.pubsub.subscribe(me, channel);
            }
            confirmation_frame(out, "subscribe", Some(channel), channels.len());
        }
    }

    fn unsubscribe(&mut self, args: &Args<'_>, cx: &mut Context) {
        let (me, out) = (cx.id(), cx.out());
        let mut channels = self.channels.take().unwrap_or_default();
        if args.len() == 1 {
            if channels.is_empty() {
                confirmation_frame(out, "unsubscribe", None, 0);
            }
            let all: Vec<Box<[u8]>> = channels.drain().collect();
            for (i, channel) in all.iter().enumerate() {
                self.shared.pubsub.unsubscribe(me, channel);
                confirmation_frame(out, "unsubscribe", Some(channel), all.len() - i - 1);
            }
        } else {
            for channel in args.iter().skip(1) {
                if channels.remove(channel) {
                    self.shared.pubsub.unsubscribe(me, channel);
                }
                confirmation_frame(out, "unsubscribe", Some(channel), channels.len());
            }
        }
        if !channels.is_empty() {
            self.channels = Some(channels);
        }
    }

    fn config(&self, args: &Args<'_>, out: &mut Vec<u8>) {
        if !args.get(1).eq_ignore_ascii_case(b"get") {
            return unknown_subcommand(out, args.get(1), "CONFIG");
        }
        if args.len() < 3 {
            return wrong_arity(out, "config|get");
        }
        let bulk_limit = self.shared.limits.max_bulk.to_string();
        let known: [(&str, &str); 4] = [
            ("save", ""),
            ("appendonly", "no"),
            ("databases", "1"),
            ("proto-max-bulk-len", &bulk_limit),
        ];
        let found: Vec<(&str, &str)> = known
            .iter()
            .filter(|(name, _)| {
                args.iter()
                    .skip(2)
                    .any(|a| a.eq_ignore_ascii_case(name.as_bytes()))
            })
            .copied()
            .collect();
        reply::array(out, 2 * found.len());
        for (name, value) in found {
            reply::bulk(out, name.as_bytes());
            reply::bulk(out, value.as_bytes());
        }
    }

    fn client(&mut self, args: &Args<'_>, cx: &mut Context) {
        let (me, out) = (cx.id(), cx.out());
        let sub = args.get(1).to_ascii_lowercase();
        match (sub.as_slice(), args.len()) {
            (b"setname", 3) => {
                let name = args.get(2);
                if name.iter().any(|&b| !(b'!'..=b'~').contains(&b)) {
                    return reply::error(
                        out,
                        "ERR Client names cannot contain spaces, newlines or special characters.",
                    );
                }
                self.name = (!name.is_empty()).then(|| name.into());
                out.extend_from_slice(reply::OK);
            }
            (b"getname", 2) => bulk_or_nil(out, self.name.as_deref()),
            (b"setinfo", 4) => out.extend_from_slice(reply::OK),
            (b"id", 2) => reply::integer(out, me.as_u64() as i64),
            (b"setname" | b"getname" | b"setinfo" | b"id", _) => {
                let sub = String::from_utf8_lossy(&sub).into_owned();
                wrong_arity(out, &format!("client|{sub}"));
            }
            _ => unknown_subcommand(out, args.get(1), "CLIENT"),
        }
    }
}

/// COMMAND: the clients only probe it (redis-cli asks COMMAND DOCS for its
/// hints); we answer COUNT, and empty lists for the listing forms.
fn command_command(args: &Args<'_>, out: &mut Vec<u8>) {
    if args.len() == 1 {
        return reply::array(out, 0);
    }
    let sub = args.get(1);
    if sub.eq_ignore_ascii_case(b"count") && args.len() == 2 {
        reply::integer(out, COMMANDS.len() as i64);
    } else if sub.eq_ignore_ascii_case(b"docs") {
        reply::array(out, 0);
    } else {
        unknown_subcommand(out, sub, "COMMAND");
    }
}

fn bulk_or_nil(out: &mut Vec<u8>, value: Option<&[u8]>) {
    match value {
        Some(v) => reply::bulk(out, v),
        None => out.extend_from_slice(reply::NIL),
    }
}

fn incr(out: &mut Vec<u8>, result: Result<i64, IncrError>) {
    match result {
        Ok(n) => reply::integer(out, n),
        Err(IncrError::NotInteger) => reply::error(out, NOT_INTEGER),
        Err(IncrError::Overflow) => reply::error(out, "ERR increment or decrement would overflow"),
    }
}
