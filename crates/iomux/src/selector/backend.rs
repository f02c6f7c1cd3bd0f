//! The backends a selector can run on, and how each reports readiness.

use super::epoll::EpollSelector;
use super::poll::PollSelector;
use super::select::SelectSelector;
use super::sigio::SigioSelector;
use super::uring::UringSelector;
use super::AnySelector;
use std::io;

/// `FromStr` and `Display` of an enum by its `name` and `ALL`: parsing
/// fails with an [`UnknownName`] listing the names.
macro_rules! named {
    ($t:ident, $what:literal) => {
        impl std::str::FromStr for $t {
            type Err = UnknownName;
            fn from_str(s: &str) -> Result<$t, UnknownName> {
                $t::ALL
                    .into_iter()
                    .find(|x| x.name() == s)
                    .ok_or_else(|| UnknownName::new($what, s, $t::ALL.map($t::name).to_vec()))
            }
        }

        impl std::fmt::Display for $t {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.name())
            }
        }
    };
}

/// A name that is none of the names of its kind: what parsing a
/// [`Backend`], a [`Trigger`] (or an engine of iomux-engine) from text fails
/// with. Its message says what was given and lists the names there are.
///
/// ```
/// let e = "kqueue".parse::<iomux::Backend>().unwrap_err();
/// assert_eq!(e.given(), "kqueue");
/// assert!(e.valid().contains(&"epoll"));
/// let e: Box<dyn std::error::Error> = Box::new(e);
/// assert_eq!(
///     e.to_string(),
///     r#"unknown selector backend "kqueue": use select, poll, epoll, sigio or uring"#
/// );
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownName {
    what: &'static str,
    given: String,
    valid: Vec<&'static str>,
}

impl UnknownName {
    /// `given` is not a `what` (such as "trigger"): the names are `valid`.
    pub fn new(what: &'static str, given: &str, valid: Vec<&'static str>) -> UnknownName {
        UnknownName {
            what,
            given: given.to_string(),
            valid,
        }
    }

    /// The text that named nothing.
    pub fn given(&self) -> &str {
        &self.given
    }

    /// The names there are, in the order the message lists them.
    pub fn valid(&self) -> &[&'static str] {
        &self.valid
    }
}

impl std::fmt::Display for UnknownName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names = listed(self.valid.clone(), "or");
        write!(f, "unknown {} {:?}: use {names}", self.what, self.given)
    }
}

impl std::error::Error for UnknownName {}

/// How readiness is reported: [`Backend::triggers`] says which a backend has.
///
/// ```
/// assert_eq!("edge".parse::<iomux::Trigger>().unwrap(), iomux::Trigger::Edge);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Trigger {
    /// Reported on every wait while the condition holds.
    Level,
    /// Reported when the condition newly arises; the caller must drain (read or
    /// write until EAGAIN) or hear nothing more.
    Edge,
    /// Reported once, then silent until re-armed with `reregister`.
    Oneshot,
}

impl Trigger {
    /// Every trigger, in the order error messages list them.
    const ALL: [Trigger; 3] = [Trigger::Level, Trigger::Edge, Trigger::Oneshot];

    fn name(self) -> &'static str {
        match self {
            Trigger::Level => "level",
            Trigger::Edge => "edge",
            Trigger::Oneshot => "oneshot",
        }
    }
}

named!(Trigger, "trigger");

/// `a`, `a and b`, `a, b and c` (with `and` or `or`).
fn listed(mut items: Vec<&str>, and_or: &str) -> String {
    let last = items.pop().unwrap_or_default();
    match items.is_empty() {
        true => last.to_string(),
        false => format!("{} {and_or} {last}", items.join(", ")),
    }
}

/// The readiness backends.
///
/// ```
/// let b: iomux::Backend = "poll".parse().unwrap();
/// assert_eq!(b.to_string(), "poll");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Backend {
    /// `select(2)` with fd_set bitmaps: descriptors below `FD_SETSIZE` (1024) only.
    Select,
    /// `poll(2)` (through `ppoll` for microsecond timeouts).
    Poll,
    /// `epoll(7)` with level, edge or one-shot triggering.
    Epoll,
    /// Signal-driven I/O (`O_ASYNC` + a real-time signal read from a
    /// signalfd): edge-triggered only, bound to the thread that opens it.
    Sigio,
    /// io_uring poll requests: multishot (edge), re-armed single-shot (level)
    /// or single-shot (one-shot); one `io_uring_enter` per wait.
    Uring,
}

impl Backend {
    /// Every backend, for tests, experiments and parsers that cover them all.
    /// Check [`triggers`](Backend::triggers) before opening one in a mode:
    /// sigio is edge-only (and one per thread), select and poll level-only,
    /// and uring needs a kernel that allows io_uring.
    ///
    /// ```
    /// use iomux::Backend;
    /// assert_eq!(Backend::ALL.len(), 5);
    /// for b in Backend::ALL {
    ///     assert_eq!(b.to_string().parse::<Backend>().unwrap(), b);
    /// }
    /// ```
    pub const ALL: [Backend; 5] = [
        Backend::Select,
        Backend::Poll,
        Backend::Epoll,
        Backend::Sigio,
        Backend::Uring,
    ];

    /// The triggers this backend supports.
    ///
    /// ```
    /// assert_eq!(iomux::Backend::Poll.triggers(), &[iomux::Trigger::Level]);
    /// ```
    pub fn triggers(self) -> &'static [Trigger] {
        match self {
            Backend::Epoll | Backend::Uring => &[Trigger::Level, Trigger::Edge, Trigger::Oneshot],
            Backend::Sigio => &[Trigger::Edge],
            _ => &[Trigger::Level],
        }
    }

    /// Check that this backend supports `trigger`, with an error naming the
    /// triggers it has and the backends that have `trigger`.
    ///
    /// ```
    /// let err = iomux::Backend::Select.check_trigger(iomux::Trigger::Edge).unwrap_err();
    /// assert_eq!(err.kind(), std::io::ErrorKind::InvalidInput);
    /// assert_eq!(
    ///     err.to_string(),
    ///     "the select selector supports level only, not edge; epoll, sigio and uring support edge"
    /// );
    /// assert!(iomux::Backend::Epoll.check_trigger(iomux::Trigger::Edge).is_ok());
    /// ```
    pub fn check_trigger(self, trigger: Trigger) -> io::Result<()> {
        if self.triggers().contains(&trigger) {
            return Ok(());
        }
        let why = match self {
            Backend::Sigio => " (signals report changes, not states)",
            _ => "",
        };
        let only = self.triggers()[0];
        let having = Backend::ALL
            .iter()
            .filter(|b| b.triggers().contains(&trigger))
            .map(|b| b.name())
            .collect();
        let having = listed(having, "and");
        Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("the {self} selector supports {only} only{why}, not {trigger}; {having} support {trigger}"),
        ))
    }

    fn name(self) -> &'static str {
        match self {
            Backend::Select => "select",
            Backend::Poll => "poll",
            Backend::Epoll => "epoll",
            Backend::Sigio => "sigio",
            Backend::Uring => "uring",
        }
    }

    /// Open a selector of this backend.
    ///
    /// ```
    /// use iomux::Selector;
    /// let s = iomux::Backend::Poll.open(iomux::Trigger::Level).unwrap();
    /// assert_eq!(s.len(), 0);
    /// ```
    pub fn open(self, trigger: Trigger) -> io::Result<AnySelector> {
        self.check_trigger(trigger)?;
        Ok(match self {
            Backend::Select => AnySelector::Select(SelectSelector::new()?),
            Backend::Poll => AnySelector::Poll(PollSelector::new()?),
            Backend::Epoll => AnySelector::Epoll(EpollSelector::new(trigger)?),
            Backend::Sigio => AnySelector::Sigio(SigioSelector::new()?),
            Backend::Uring => AnySelector::Uring(UringSelector::new(trigger)?),
        })
    }
}

named!(Backend, "selector backend");

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_parse_back_and_unknown_ones_list_the_choices() {
        for t in Trigger::ALL {
            assert_eq!(t.to_string().parse::<Trigger>(), Ok(t));
        }
        assert_eq!(
            "flat".parse::<Trigger>().unwrap_err().to_string(),
            r#"unknown trigger "flat": use level, edge or oneshot"#
        );
        assert_eq!(
            "kqueue".parse::<Backend>().unwrap_err().to_string(),
            r#"unknown selector backend "kqueue": use select, poll, epoll, sigio or uring"#
        );
    }
}
