//! The create form's names (seed 9.2.x, §4 of the inference digest): a model's name, its
//! version numbers, and the start command's sanitisation.

use std::fmt;

/// A model name is 1 to this many characters (seed 9.2.2 Table 9-2).
pub const MAX_MODEL_NAME_CHARS: usize = 64;

/// The largest part of a version. The seed says only "0.0.1 for the first import"; five
/// digits per part is far past any real model's history and keeps a version short and
/// easy to compare.
pub const MAX_VERSION_PART: u32 = 99_999;

/// The version of a model's first import (seed 9.2.2).
pub const FIRST_VERSION: Version = Version {
    major: 0,
    minor: 0,
    patch: 1,
};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error(
        "model name {problem}: 1 to {MAX_MODEL_NAME_CHARS} characters, only letters A-Z a-z, digits, '-' and '_' (got {got:?})"
    )]
    ModelName { got: String, problem: String },
    #[error(
        "version {problem}: three numbers separated by dots like 0.0.1, each 0 to {MAX_VERSION_PART} without leading zeros (got {got:?})"
    )]
    Version { got: String, problem: String },
    #[error("version {0} is the last one: there is no version after it")]
    LastVersion(Version),
}

/// Checks a model name: 1 to 64 characters of `A-Z a-z 0-9 - _`.
pub fn validate_model_name(name: &str) -> Result<(), NameError> {
    let refuse = |problem: String| NameError::ModelName {
        got: shown(name),
        problem,
    };
    if name.is_empty() {
        return Err(refuse("is empty".into()));
    }
    let chars = name.chars().count();
    if chars > MAX_MODEL_NAME_CHARS {
        return Err(refuse(format!("is {chars} characters long")));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || *c == '-' || *c == '_'))
    {
        return Err(refuse(format!("may not contain {c:?}")));
    }
    Ok(())
}

/// A model version, `major.minor.patch`; ordered as numbers (`0.0.10` > `0.0.9`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Version {
    pub major: u32,
    pub minor: u32,
    pub patch: u32,
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.major, self.minor, self.patch)
    }
}

impl Version {
    /// The version after this one: the last part goes up by one; past
    /// [`MAX_VERSION_PART`] it wraps to 0 and carries into the part before, like an
    /// odometer (`0.0.99999` → `0.1.0`, `0.99999.99999` → `1.0.0`). Counting on past 9
    /// (`0.0.9` → `0.0.10`) keeps versions in import order when sorted as numbers.
    /// `None` after `99999.99999.99999`.
    pub fn next(self) -> Option<Version> {
        if self.patch < MAX_VERSION_PART {
            Some(Version {
                patch: self.patch + 1,
                ..self
            })
        } else if self.minor < MAX_VERSION_PART {
            Some(Version {
                minor: self.minor + 1,
                patch: 0,
                ..self
            })
        } else if self.major < MAX_VERSION_PART {
            Some(Version {
                major: self.major + 1,
                minor: 0,
                patch: 0,
            })
        } else {
            None
        }
    }
}

/// Checks and reads a version: three dot-separated numbers, each 0 to 99999, without leading
/// zeros (`0.0.1`, `1.20.300`; not `01.0.0`, `1.0`, `1.0.0.0`, `1.0.-1`).
pub fn validate_version(s: &str) -> Result<Version, NameError> {
    let refuse = |problem: &str| NameError::Version {
        got: shown(s),
        problem: problem.to_string(),
    };
    let parts: Vec<&str> = s.split('.').collect();
    if parts.len() != 3 {
        return Err(refuse("must have three parts"));
    }
    let mut nums = [0u32; 3];
    for (slot, part) in nums.iter_mut().zip(&parts) {
        if part.is_empty() || !part.bytes().all(|b| b.is_ascii_digit()) {
            return Err(refuse("must have only digits between the dots"));
        }
        if part.len() > 1 && part.starts_with('0') {
            return Err(refuse("must not have leading zeros"));
        }
        // At most five digits: longer is out of range before any parse can overflow.
        let n = if part.len() > 5 {
            None
        } else {
            part.parse::<u32>().ok()
        };
        match n {
            Some(n) if n <= MAX_VERSION_PART => *slot = n,
            _ => return Err(refuse("has a part over 99999")),
        }
    }
    Ok(Version {
        major: nums[0],
        minor: nums[1],
        patch: nums[2],
    })
}

/// The version that follows `current` (see [`Version::next`] for the rollover): `0.0.1` →
/// `0.0.2`. An error for a malformed `current` or the very last version, rather than a
/// made-up string the caller would store.
pub fn next_version(current: &str) -> Result<String, NameError> {
    let v = validate_version(current)?;
    v.next()
        .map(|n| n.to_string())
        .ok_or(NameError::LastVersion(v))
}

/// What empties a start command (seed 9.2.3, 9.2.4: the extraction lost the `|`, restored
/// here). Shell metacharacters, and the container-runtime options that would reach the host
/// (volumes, mounts, privileges).
pub const START_COMMAND_FORBIDDEN: [&str; 15] = [
    "$",
    "|",
    ">",
    "<",
    "`",
    "!",
    "\n",
    "\\",
    "?",
    "-v",
    "--volume",
    "--mount",
    "--tmpfs",
    "--privileged",
    "--cap-add",
];

/// The seed's start-command sanitisation: `""` when `command` contains any of
/// [`START_COMMAND_FORBIDDEN`], else `command` unchanged. The caller stores the result
/// (an empty command then means the engine's default, seed Table 9-1).
///
/// The characters are matched anywhere, as the seed's rule says. The option words (`-v`,
/// `--volume`, `--mount`, `--tmpfs`, `--privileged`, `--cap-add`) are matched at the start
/// of a word (a run of characters between spaces or tabs): that catches every way to pass
/// them (`-v /:/h`, `-v/etc:/etc`, `--volume=/:/h`) without emptying commands that merely
/// hold the letters, such as `sh /opt/my-venv/run.sh` or `python app.py --verbose`, which
/// the seed's plain substring rule would. A word that starts with `-v` is still refused
/// (`python -verbose`), since short options take their value attached. Matching is
/// case-sensitive (`-V` is another option). The seed's list has no `;`, `&` or `(`:
/// those are left alone, so the command must never be run by a shell on the host (the
/// engines run it as an argument vector inside the model's sandbox or container).
pub fn sanitize_start_command(command: &str) -> String {
    let (options, chars): (Vec<&str>, Vec<&str>) = START_COMMAND_FORBIDDEN
        .iter()
        .partition(|needle| needle.starts_with('-'));
    let bad_char = chars.iter().any(|c| command.contains(c));
    let bad_word = command
        .split([' ', '\t'])
        .any(|word| options.iter().any(|o| word.starts_with(o)));
    if bad_char || bad_word {
        String::new()
    } else {
        command.to_string()
    }
}

/// A user's value in a message, cut short.
fn shown(s: &str) -> String {
    const MAX_SHOWN_CHARS: usize = 80;
    if s.chars().count() <= MAX_SHOWN_CHARS {
        s.to_string()
    } else {
        let mut head: String = s.chars().take(MAX_SHOWN_CHARS).collect();
        head.push('…');
        head
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn model_names_follow_the_seed_rule() {
        let sixty_four = "a".repeat(64);
        let sixty_five = "a".repeat(65);
        for ok in ["my-model_1", "A", "resnet50", "_-_", sixty_four.as_str()] {
            assert_eq!(validate_model_name(ok), Ok(()), "{ok:?}");
        }
        for (bad, says) in [
            ("a b", "' '"),
            (sixty_five.as_str(), "65 characters"),
            ("", "empty"),
            ("modèle", "'è'"),
            ("a.b", "'.'"),
            ("a/b", "'/'"),
        ] {
            let err = validate_model_name(bad).unwrap_err().to_string();
            assert!(err.starts_with("model name "), "{err}");
            assert!(err.contains(says), "{bad:?}: {err}");
            assert!(
                err.contains("only letters A-Z a-z, digits, '-' and '_'"),
                "{err}"
            );
        }
    }

    #[test]
    fn a_name_of_64_non_ascii_letters_is_refused_for_its_letters_not_its_length() {
        // 128 bytes but 64 characters: the length is fine, the letters are not.
        let err = validate_model_name(&"é".repeat(64))
            .unwrap_err()
            .to_string();
        assert!(err.contains("may not contain 'é'"), "{err}");
    }

    #[test]
    fn versions_are_three_numbers_without_leading_zeros() {
        for (ok, want) in [
            ("0.0.1", (0, 0, 1)),
            ("0.0.0", (0, 0, 0)),
            ("1.20.300", (1, 20, 300)),
            ("99999.99999.99999", (99999, 99999, 99999)),
        ] {
            let v = validate_version(ok).unwrap();
            assert_eq!((v.major, v.minor, v.patch), want, "{ok}");
            assert_eq!(v.to_string(), ok);
        }
        for (bad, says) in [
            ("1.0", "three parts"),
            ("1.0.0.0", "three parts"),
            ("", "three parts"),
            ("01.0.0", "leading zeros"),
            ("0.00.1", "leading zeros"),
            ("1..0", "only digits"),
            ("1.0.-1", "only digits"),
            ("1.0.+1", "only digits"),
            ("1.a.0", "only digits"),
            (" 1.0.0", "only digits"),
            ("1.0.100000", "over 99999"),
            ("1.0.99999999999999999999", "over 99999"),
        ] {
            let err = validate_version(bad).unwrap_err().to_string();
            assert!(err.starts_with("version "), "{err}");
            assert!(err.contains(says), "{bad:?}: {err}");
        }
    }

    #[test]
    fn versions_compare_as_numbers() {
        let v = |s| validate_version(s).unwrap();
        assert!(v("0.0.10") > v("0.0.9"));
        assert!(v("0.1.0") > v("0.0.99999"));
        assert!(v("1.0.0") > v("0.99999.99999"));
    }

    #[test]
    fn next_version_counts_up_and_carries_like_an_odometer() {
        for (from, to) in [
            ("0.0.1", "0.0.2"),
            ("0.0.9", "0.0.10"),
            ("0.0.99999", "0.1.0"),
            ("0.99999.99999", "1.0.0"),
            ("2.3.4", "2.3.5"),
        ] {
            assert_eq!(next_version(from).unwrap(), to, "{from}");
        }
        assert_eq!(FIRST_VERSION.to_string(), "0.0.1");
        assert_eq!(
            next_version("99999.99999.99999"),
            Err(NameError::LastVersion(Version {
                major: 99999,
                minor: 99999,
                patch: 99999
            }))
        );
        assert!(matches!(
            next_version("0.0.01"),
            Err(NameError::Version { .. })
        ));
    }

    #[test]
    fn start_commands_with_the_seeds_forbidden_strings_are_emptied() {
        for bad in [
            "sh run.sh --privileged",
            "echo $HOME",
            "a|b",
            "run > out",
            "run < in",
            "echo `id`",
            "echo hi!",
            "sh run.sh\nrm -rf /",
            "sh run\\.sh",
            "ls ?",
            "docker -v /:/host",
            "x -v/etc:/etc",
            "x --volume=/:/h",
            "x --mount type=bind",
            "x --tmpfs /t",
            "x --cap-add SYS_ADMIN",
            "x --privileged",
            "x\t--privileged",
            // A word starting with -v: a short option with its value attached.
            "python -verbose app.py",
        ] {
            assert_eq!(sanitize_start_command(bad), "", "{bad:?}");
        }
    }

    #[test]
    fn start_commands_without_them_are_kept_as_they_are() {
        for ok in [
            "sh /home/mind/run.sh",
            "bash /home/work/predict/bin/run.sh",
            "python -u app.py --port 8080",
            "python app.py -V",
            // The letters inside a word are not the options (the seed's substring rule
            // would empty these).
            "sh /opt/my-venv/run.sh",
            "python app.py --verbose",
            "python train-v2.py",
            "",
        ] {
            assert_eq!(sanitize_start_command(ok), ok, "{ok:?}");
        }
    }
}
