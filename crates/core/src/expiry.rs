//! Expiry on time (issue 10): which peers' day has come, what the daemon must do about them,
//! and when each expiry falls, for status and monitoring.
//!
//! A peer that `expires: 2026-12-01` works through 2026-11-30 (UTC) and is off from
//! 2026-12-01 00:00:00 UTC on: off the device, without a firewall element. `apply` renders
//! that for the day it runs; the daemon makes it true on the day itself, without `apply`,
//! by asking [`Watch`] every poll.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::net::Ipv4Addr;

use crate::device::Observed;
use crate::{Date, Key, PeerName, State};

/// A peer whose expiry day has come.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expired {
    /// Its name.
    pub name: PeerName,
    /// Its key on the device.
    pub public_key: Key,
    /// Its VPN address.
    pub address: Ipv4Addr,
    /// Its expiry day.
    pub expires: Date,
}

/// The peers whose expiry day is `today` or earlier, enabled or not, in name order.
pub fn expired(state: &State, today: Date) -> Vec<Expired> {
    state
        .peers
        .iter()
        .filter_map(|(name, p)| {
            let expires = p.expires.filter(|e| *e <= today)?;
            Some(Expired {
                name: name.clone(),
                public_key: p.public_key,
                address: p.address,
                expires,
            })
        })
        .collect()
}

/// The public keys of expired peers still on the device: what to remove.
pub fn on_device(expired: &[Expired], observed: Option<&Observed>) -> Vec<Key> {
    let Some(o) = observed else {
        return Vec::new();
    };
    let present: HashSet<Key> = o.peers.iter().map(|p| p.public_key).collect();
    expired
        .iter()
        .filter(|e| present.contains(&e.public_key))
        .map(|e| e.public_key)
        .collect()
}

/// What the daemon knows about expiries it has dealt with: each expired peer is enforced and
/// reported once, not every poll.
#[derive(Debug, Clone, Default)]
pub struct Watch {
    /// (peer, its expiry day) already dealt with; an expiry moved to another day is new.
    done: BTreeSet<(PeerName, Date)>,
    /// Whether a first enforcement happened: expiries older than the daemon are dealt with
    /// quietly unless something had to be removed.
    started: bool,
}

impl Watch {
    /// A watch that has dealt with nothing yet.
    pub fn new() -> Self {
        Watch::default()
    }

    /// Whether the daemon must act now: an expired peer it has not dealt with, or one that is
    /// (again) on the device, e.g. after a restart brought the interface up from a config
    /// rendered before the expiry.
    pub fn pending(&self, state: &State, observed: Option<&Observed>, today: Date) -> bool {
        // Most polls end here: no peer has an expiry that has come.
        let expired = expired(state, today);
        if expired.is_empty() {
            return false;
        }
        expired
            .iter()
            .any(|e| !self.done.contains(&(e.name.clone(), e.expires)))
            || !on_device(&expired, observed).is_empty()
    }

    /// Records an enforcement for `today` on `state`: `removed` were taken off the device,
    /// `firewall_reloaded` says whether the ruleset changed. Returns the expiries to report
    /// (`peer_expired`), each once: those that came while the daemon watched, and older ones
    /// only when they still had to be enforced.
    pub fn settle(
        &mut self,
        state: &State,
        today: Date,
        removed: &[Key],
        firewall_reloaded: bool,
    ) -> Vec<Expired> {
        let expired = expired(state, today);
        let mut report = Vec::new();
        for e in &expired {
            let key = (e.name.clone(), e.expires);
            let new = !self.done.contains(&key);
            let acted = removed.contains(&e.public_key) || (new && firewall_reloaded);
            if acted || (new && self.started) {
                report.push(e.clone());
            }
            self.done.insert(key);
        }
        // Forget peers that are gone or whose expiry moved, so a new expiry counts again.
        let current: BTreeSet<(PeerName, Date)> =
            expired.into_iter().map(|e| (e.name, e.expires)).collect();
        self.done.retain(|k| current.contains(k));
        self.started = true;
        report
    }
}

/// Days from `today` to each peer's expiry (0: it expires today, so it is off; negative: it
/// expired that many days ago), for peers that have one.
pub fn days_left(state: &State, today: Date) -> BTreeMap<PeerName, i64> {
    let t = unix_day(today);
    state
        .peers
        .iter()
        .filter_map(|(n, p)| p.expires.map(|e| (n.clone(), unix_day(e) - t)))
        .collect()
}

/// The day number of `date` since 1970-01-01 (negative before it).
pub fn unix_day(date: Date) -> i64 {
    // The first day whose date is not before `date`: a search over the inverse of
    // `Date::from_unix_seconds`, which keeps the calendar arithmetic in one place.
    let (mut lo, mut hi) = (-800_000i64, 3_000_000i64);
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        if Date::from_unix_seconds(mid * 86_400) < date {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    lo
}

/// The Unix time at which a peer with this expiry day goes off: 00:00:00 UTC of that day.
pub fn expiry_timestamp(date: Date) -> i64 {
    unix_day(date) * 86_400
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::device::ObservedPeer;
    use crate::testing::{peer, state};

    fn d(s: &str) -> Date {
        Date::parse(s).unwrap()
    }

    fn seen(key: u8) -> ObservedPeer {
        ObservedPeer {
            public_key: Key::from([key; 32]),
            preshared_key: None,
            endpoint: None,
            allowed_ips: vec![],
            latest_handshake: 0,
            rx_bytes: 0,
            tx_bytes: 0,
            keepalive: 0,
        }
    }

    fn lab() -> State {
        let mut s = state("192.168.100.0/24", "192.168.100.1");
        s.peers
            .insert("alice".parse().unwrap(), peer("192.168.100.2", 1));
        let mut bob = peer("192.168.100.3", 2);
        bob.expires = Some(d("2026-12-02"));
        s.peers.insert("bob".parse().unwrap(), bob);
        let mut carol = peer("192.168.100.4", 3);
        carol.expires = Some(d("2026-01-01"));
        carol.enabled = false;
        s.peers.insert("carol".parse().unwrap(), carol);
        s
    }

    fn device(keys: &[u8]) -> Observed {
        Observed {
            public_key: None,
            listen_port: 51820,
            peers: keys.iter().map(|k| seen(*k)).collect(),
        }
    }

    #[test]
    fn a_peer_is_expired_from_its_day_on_enabled_or_not() {
        let s = lab();
        let names = |today| {
            expired(&s, d(today))
                .into_iter()
                .map(|e| e.name.to_string())
                .collect::<Vec<_>>()
        };
        assert_eq!(names("2026-12-01"), ["carol"]);
        assert_eq!(names("2026-12-02"), ["bob", "carol"]);
        assert_eq!(names("2027-06-01"), ["bob", "carol"]);
        // The same boundary as the renderers: active the day before, not on the day.
        assert!(State::is_active(
            &s.peers[&"bob".parse().unwrap()],
            d("2026-12-01")
        ));
        assert!(!State::is_active(
            &s.peers[&"bob".parse().unwrap()],
            d("2026-12-02")
        ));
    }

    #[test]
    fn the_day_comes_while_the_daemon_watches() {
        let s = lab();
        let dev = device(&[1, 2]);
        let mut w = Watch::new();
        // The first poll: carol expired long ago and is not on the device: dealt with quietly.
        assert!(w.pending(&s, Some(&dev), d("2026-12-01")));
        assert!(w.settle(&s, d("2026-12-01"), &[], false).is_empty());
        assert!(!w.pending(&s, Some(&dev), d("2026-12-01")));
        // Midnight: bob's day; he is on the device.
        let today = d("2026-12-02");
        assert!(w.pending(&s, Some(&dev), today));
        let expired_now = expired(&s, today);
        assert_eq!(
            on_device(&expired_now, Some(&dev)),
            vec![Key::from([2; 32])]
        );
        let report = w.settle(&s, today, &[Key::from([2; 32])], true);
        assert_eq!(report.len(), 1);
        assert_eq!(report[0].name.to_string(), "bob");
        assert_eq!(report[0].expires, today);
        // Once: the next polls have nothing to do and report nothing.
        let after = device(&[1]);
        assert!(!w.pending(&s, Some(&after), today));
        assert!(w.settle(&s, today, &[], false).is_empty());
        assert!(!w.pending(&s, Some(&after), d("2026-12-03")));
        // A restart of the interface from an old config brings bob back: act again.
        assert!(w.pending(&s, Some(&dev), d("2026-12-03")));
        let again = w.settle(&s, d("2026-12-03"), &[Key::from([2; 32])], false);
        assert_eq!(again.len(), 1);
    }

    #[test]
    fn an_old_expiry_still_on_the_device_at_start_is_enforced_and_reported() {
        let s = lab();
        let mut w = Watch::new();
        let today = d("2026-12-05");
        assert!(w.pending(&s, Some(&device(&[1, 2])), today));
        let report = w.settle(&s, today, &[Key::from([2; 32])], true);
        // bob was removed; carol had no element and was not on the device, but the firewall
        // was reloaded, so she is reported too (her element may have been in it).
        let names: Vec<String> = report.iter().map(|e| e.name.to_string()).collect();
        assert_eq!(names, ["bob", "carol"]);
    }

    #[test]
    fn an_expiry_moved_counts_again() {
        let mut s = lab();
        let mut w = Watch::new();
        let today = d("2026-12-02");
        w.settle(&s, today, &[], false);
        // bob is given a new, later day, then set back to today by hand.
        s.peers.get_mut(&"bob".parse().unwrap()).unwrap().expires = Some(d("2027-01-01"));
        assert!(!w.pending(&s, None, today));
        w.settle(&s, today, &[], false);
        s.peers.get_mut(&"bob".parse().unwrap()).unwrap().expires = Some(d("2026-11-30"));
        assert!(w.pending(&s, None, today));
        let report = w.settle(&s, today, &[], false);
        assert_eq!(report.len(), 1, "{report:?}");
    }

    #[test]
    fn days_and_timestamps() {
        assert_eq!(unix_day(d("1970-01-01")), 0);
        assert_eq!(unix_day(d("1970-01-02")), 1);
        assert_eq!(unix_day(d("1969-12-31")), -1);
        assert_eq!(expiry_timestamp(d("2026-12-01")), 1_796_083_200);
        assert_eq!(unix_day(d("2000-03-01")) - unix_day(d("2000-02-28")), 2);
        assert_eq!(unix_day(d("9999-12-31")), 2_932_896);
        let s = lab();
        let left = days_left(&s, d("2026-11-30"));
        assert_eq!(left[&"bob".parse().unwrap()], 2);
        assert!(left[&"carol".parse().unwrap()] < 0);
        assert!(!left.contains_key(&"alice".parse::<PeerName>().unwrap()));
    }

    proptest::proptest! {
        #[test]
        fn unix_day_inverts_from_unix_seconds(day in -700_000i64..2_900_000) {
            let date = Date::from_unix_seconds(day * 86_400 + 43_200);
            proptest::prop_assert_eq!(unix_day(date), day);
        }
    }
}
