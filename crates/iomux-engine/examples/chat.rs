//! A chat room on the public API: the guide's example (docs/guide.md).
//!
//! Every line a member sends goes to every other member; `/nick NAME` names
//! you; a member silent for 5 minutes is told and let go. Run it on any
//! engine, then talk with `nc 127.0.0.1 7000` from a few terminals:
//!
//! ```sh
//! cargo run --release -p iomux-engine --example chat -- epoll-edge
//! cargo run --release -p iomux-engine --example chat -- uring
//! ```

use iomux_engine::{Config, ConnId, Context, Engine, Server, Service, Step, StopSignals};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Who is in the room, by connection, with their names: shared by every
/// connection of the server, whichever loop thread serves it.
type Room = Arc<Mutex<HashMap<ConnId, String>>>;

const SILENCE: Duration = Duration::from_secs(300);

struct Member {
    room: Room,
}

impl Member {
    /// Send `text` to everyone in the room but `from`.
    fn broadcast(&self, from: ConnId, text: &[u8], cx: &mut Context) {
        let others: Vec<ConnId> = self.room.lock().unwrap().keys().copied().collect();
        for other in others.into_iter().filter(|o| *o != from) {
            cx.send_to(other, text);
        }
    }
}

impl Service for Member {
    fn on_open(&mut self, cx: &mut Context) {
        let name = format!("guest{}", cx.id());
        cx.write(format!("welcome, {name}\n").as_bytes());
        self.broadcast(cx.id(), format!("* {name} joined\n").as_bytes(), cx);
        self.room.lock().unwrap().insert(cx.id(), name);
        cx.set_timer(0, SILENCE);
    }

    fn on_data(&mut self, input: &[u8], cx: &mut Context) -> Step {
        // Whole lines only; a partial line waits for the rest.
        let Some(end) = input.iter().rposition(|&b| b == b'\n') else {
            return Step::keep(0);
        };
        for line in input[..end].split(|&b| b == b'\n') {
            let text = String::from_utf8_lossy(line).trim().to_string();
            let me = cx.id();
            if let Some(nick) = text.strip_prefix("/nick ") {
                self.room.lock().unwrap().insert(me, nick.to_string());
                continue;
            }
            let name = self
                .room
                .lock()
                .unwrap()
                .get(&me)
                .cloned()
                .unwrap_or_default();
            self.broadcast(me, format!("{name}: {text}\n").as_bytes(), cx);
        }
        cx.set_timer(0, SILENCE); // activity resets the silence timer
        Step::keep(end + 1)
    }

    fn on_timer(&mut self, _key: u64, cx: &mut Context) {
        cx.write(b"* quiet for too long, bye\n");
        cx.close();
    }

    fn on_close(&mut self, id: ConnId) {
        self.room.lock().unwrap().remove(&id);
    }
}

fn main() {
    if let Err(e) = serve() {
        eprintln!("chat: {e}");
        std::process::exit(1);
    }
}

fn serve() -> std::io::Result<()> {
    let usage = || std::io::Error::other("usage: chat [ENGINE], such as epoll-edge");
    let engine: Engine = match std::env::args().skip(1).collect::<Vec<_>>().as_slice() {
        [] => Engine::ALL[0],
        [name] => name.parse().map_err(std::io::Error::other)?,
        _ => return Err(usage()),
    };
    if !engine.carries_out_commands() {
        let why = "has no loop to deliver to other connections; try epoll-edge or uring";
        return Err(std::io::Error::other(format!("{engine} {why}")));
    }
    let config = Config {
        addr: "127.0.0.1:7000".parse().unwrap(),
        threads: 2, // members on either loop reach each other
        ..Config::default()
    };
    let room = Room::default();
    let signals = StopSignals::block()?; // before the loops start: they inherit it
    let server = Server::start(config, engine, move || Member { room: room.clone() })?;
    println!("chat on {} ({engine}); Ctrl-C to stop", server.local_addr());
    signals.wait();
    server.shutdown(); // stop accepting; what is being sent still goes out
    server.join().map(drop)
}
