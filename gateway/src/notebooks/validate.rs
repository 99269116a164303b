//! Input rules for notebooks (spec/notebook.md §2.1, §4.1). Each error names the field and
//! what is allowed.

use crate::config::{Flavor, Settings};
use crate::error::Error;

/// The seed's name rule: 1–128 characters, digits, letters, `_` and `-`.
pub const NAME_MAX: usize = 128;
/// The seed gives no limit; this keeps list views and events readable.
pub const DESCRIPTION_MAX: usize = 512;
/// The seed's custom auto-stop range, in hours.
pub const AUTO_STOP_HOURS: std::ops::RangeInclusive<i64> = 1..=72;

pub fn name(name: &str) -> Result<&str, Error> {
    if name.is_empty() {
        return Err(Error::invalid("name: must not be empty"));
    }
    if name.chars().count() > NAME_MAX {
        return Err(Error::invalid(format!(
            "name: {} characters is too long; at most {NAME_MAX}",
            name.chars().count()
        )));
    }
    if let Some(bad) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || *c == '_' || *c == '-'))
    {
        return Err(Error::invalid(format!(
            "name: {bad:?} is not allowed; use only letters, digits, '_' and '-'"
        )));
    }
    Ok(name)
}

pub fn generated_name() -> String {
    format!(
        "notebook-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    )
}

pub fn description(d: &str) -> Result<&str, Error> {
    let n = d.chars().count();
    if n > DESCRIPTION_MAX {
        return Err(Error::invalid(format!(
            "description: {n} characters is too long; at most {DESCRIPTION_MAX}"
        )));
    }
    Ok(d)
}

/// A flavor from the settings, refused when it needs accelerators this host does not have.
pub fn flavor<'a>(s: &'a Settings, id: &str) -> Result<&'a Flavor, Error> {
    let f = s.flavors.iter().find(|f| f.id == id).ok_or_else(|| {
        let known: Vec<&str> = s.flavors.iter().map(|f| f.id.as_str()).collect();
        Error::invalid(format!(
            "flavor: unknown flavor {id:?}; available: {}",
            known.join(", ")
        ))
    })?;
    let need = f.accelerator_count();
    if let Some((have, what)) = crate::gpu::shortfall(&f.kind, need) {
        return Err(Error::invalid(format!(
            "flavor: {id:?} needs {need} {what}(s) and this host has {have}; pick a CPU flavor"
        )));
    }
    Ok(f)
}

pub fn auto_stop_hours(h: i64) -> Result<i64, Error> {
    if !AUTO_STOP_HOURS.contains(&h) {
        return Err(Error::invalid(format!(
            "auto_stop.duration_hours: {h} is out of range; use a whole number of hours from 1 to 72"
        )));
    }
    Ok(h)
}

/// The longest lease (and the furthest a renew reaches ahead).
pub const MAX_AUTO_STOP_HOURS: i64 = 72;

pub fn renew_hours(h: i64) -> Result<i64, Error> {
    if !AUTO_STOP_HOURS.contains(&h) {
        return Err(Error::invalid(format!(
            "hours: {h} is out of range; renew by a whole number of hours from 1 to 72"
        )));
    }
    Ok(h)
}

/// The longest idle timeout: a week.
pub const MAX_IDLE_TIMEOUT_SECS: i64 = 7 * 24 * 3600;

pub fn idle_timeout(t: i64) -> Result<i64, Error> {
    if !(0..=MAX_IDLE_TIMEOUT_SECS).contains(&t) {
        return Err(Error::invalid(format!(
            "auto_stop.idle_timeout_seconds: {t} is out of range; use 0 (off) to {MAX_IDLE_TIMEOUT_SECS} seconds"
        )));
    }
    Ok(t)
}

/// The seed's whitelist limit: at most five addresses.
pub const WHITELIST_MAX: usize = 5;
/// Key pairs one notebook may accept.
pub const KEY_PAIRS_MAX: usize = 10;

/// IPs or CIDRs (`10.0.0.7`, `192.168.0.0/16`, `2001:db8::/32`), normalised, without
/// duplicates. An empty list lets any address connect.
pub fn whitelist(entries: &[String]) -> Result<Vec<String>, Error> {
    if entries.len() > WHITELIST_MAX {
        return Err(Error::invalid(format!(
            "ssh.whitelist: {} entries is too many; at most {WHITELIST_MAX} IP addresses or CIDR ranges",
            entries.len()
        )));
    }
    let mut out: Vec<String> = Vec::new();
    for e in entries {
        let net = crate::whitelist::Net::parse(e)
            .map_err(|why| Error::invalid(format!("ssh.whitelist: {e:?} {why}")))?;
        let text = net.to_string();
        if !out.contains(&text) {
            out.push(text);
        }
    }
    Ok(out)
}

/// Key pair names as given: no duplicates, within the limit. (Whether they exist is checked
/// against the store.)
pub fn key_pair_names(names: &[String]) -> Result<Vec<String>, Error> {
    if names.len() > KEY_PAIRS_MAX {
        return Err(Error::invalid(format!(
            "ssh.key_pairs: at most {KEY_PAIRS_MAX} key pairs"
        )));
    }
    let mut out: Vec<String> = Vec::new();
    for n in names {
        if !out.contains(n) {
            out.push(n.clone());
        }
    }
    out.sort();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        let ok = ["a", "nb_1-a", &"x".repeat(128), "ABC-def_09"];
        for n in ok {
            assert!(name(n).is_ok(), "{n}");
        }
        let bad = [
            ("", "empty"),
            (&*"x".repeat(129), "too long"),
            ("a b", "' '"),
            ("a.b", "'.'"),
            ("é", "'é'"),
        ];
        for (n, why) in bad {
            let e = name(n).unwrap_err();
            assert!(
                e.message.starts_with("name:") && e.message.contains(why),
                "{n}: {}",
                e.message
            );
        }
        assert!(name(&generated_name()).is_ok());
    }

    #[test]
    fn hours() {
        for h in [1, 2, 4, 6, 72] {
            assert!(auto_stop_hours(h).is_ok());
        }
        for h in [0, -1, 73] {
            assert!(
                auto_stop_hours(h)
                    .unwrap_err()
                    .message
                    .contains("auto_stop.duration_hours")
            );
        }
    }

    #[test]
    fn catalogue_errors_list_choices() {
        let s = Settings::default();
        assert!(flavor(&s, "cpu-2-8").is_ok());
        let e = flavor(&s, "gpu-huge").unwrap_err();
        assert!(
            e.message.contains("gpu-huge") && e.message.contains("cpu-2-8"),
            "{}",
            e.message
        );
    }

    #[test]
    fn whitelists_and_key_pair_lists() {
        let v = |xs: &[&str]| xs.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            whitelist(&v(&["10.1.2.3/8", "127.0.0.1", "10.0.0.0/8"])).unwrap(),
            v(&["10.0.0.0/8", "127.0.0.1"])
        );
        assert!(whitelist(&[]).unwrap().is_empty());
        let six = v(&[
            "1.1.1.1", "1.1.1.2", "1.1.1.3", "1.1.1.4", "1.1.1.5", "1.1.1.6",
        ]);
        assert!(whitelist(&six).unwrap_err().message.contains("at most 5"));
        let e = whitelist(&v(&["nope"])).unwrap_err().message;
        assert!(e.starts_with("ssh.whitelist: \"nope\""), "{e}");
        assert_eq!(
            key_pair_names(&v(&["b", "a", "b"])).unwrap(),
            v(&["a", "b"])
        );
        let many: Vec<String> = (0..11).map(|i| format!("k{i}")).collect();
        assert!(key_pair_names(&many).is_err());
    }

    /// Property tests: names and whitelist entries from arbitrary text.
    mod props {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(512))]

            #[test]
            fn names_are_accepted_exactly_when_plain(n in prop_oneof!["\\PC{0,140}", "[a-zA-Z0-9_-]{0,140}", "[\\x00-\\x7f]{0,10}"]) {
                let plain = (1..=NAME_MAX).contains(&n.chars().count())
                    && n.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
                match name(&n) {
                    Ok(got) => prop_assert!(plain && got == n),
                    Err(e) => {
                        prop_assert!(!plain);
                        prop_assert!(e.message.starts_with("name:"), "{}", e.message);
                    }
                }
                let _ = description(&n);
            }

            #[test]
            fn whitelist_entries_parse_or_are_refused_and_normalize_stably(
                entries in prop::collection::vec(
                    prop_oneof![
                        "\\PC{0,24}",
                        "[0-9./]{1,20}",
                        "[0-9a-f:/]{1,30}",
                        (any::<[u8; 4]>(), 0u8..40).prop_map(|(a, m)| format!("{}.{}.{}.{}/{m}", a[0], a[1], a[2], a[3])),
                    ],
                    0..7,
                ),
            ) {
                match whitelist(&entries) {
                    Ok(out) => {
                        prop_assert!(out.len() <= WHITELIST_MAX);
                        // Normalized entries are accepted again, unchanged.
                        prop_assert_eq!(whitelist(&out).unwrap(), out);
                    }
                    Err(e) => prop_assert!(e.message.starts_with("ssh.whitelist:"), "{}", e.message),
                }
            }
        }
    }
}
