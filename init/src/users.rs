//! Users and groups of the image: `User`, `Group` and `SupplementaryGroups`
//! resolved from `/etc/passwd` and `/etc/group` (read as plain files of at
//! most [`MAX_DB_BYTES`]; no NSS, which an enclave image has
//! no use for and which could block), or given as numbers.

use std::path::Path;

/// Largest `/etc/passwd` or `/etc/group` read: 1 MiB (read line by line,
/// so it costs about its size).
pub const MAX_DB_BYTES: u64 = 1 << 20;

/// Who a service runs as, resolved at load.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunAs {
    pub uid: u32,
    pub gid: u32,
    /// Supplementary groups: `SupplementaryGroups`, plus the groups that
    /// list the user in /etc/group.
    pub groups: Vec<u32>,
    /// From the passwd entry: HOME, USER and LOGNAME for the service (none
    /// for a uid without an entry).
    pub name: Option<String>,
    pub home: Option<String>,
}

const PASSWD: &str = "/etc/passwd";
const GROUP: &str = "/etc/group";

/// Resolve the three keys (absent ones are None/empty). Errors name the key.
pub fn resolve(
    user: Option<&str>,
    group: Option<&str>,
    supplementary: &[String],
) -> Result<Option<RunAs>, String> {
    if user.is_none() && group.is_none() && supplementary.is_empty() {
        return Ok(None);
    }
    let passwd = read(PASSWD);
    let groups = read(GROUP);
    let (uid, mut gid, name, home) = match user {
        None => (0, 0, None, None),
        Some(u) => match entries(&passwd).find(|f| f.first() == Some(&u)) {
            Some(f) => (
                field_id(&f, 2).ok_or(format!("User: bad {PASSWD} entry for '{u}'"))?,
                field_id(&f, 3).ok_or(format!("User: bad {PASSWD} entry for '{u}'"))?,
                Some(u.to_string()),
                f.get(5).map(|h| h.to_string()),
            ),
            None => {
                let uid = number(u).ok_or(format!("User: unknown user '{u}' (not in {PASSWD})"))?;
                // A number: its entry, if it has one, gives the rest.
                match entries(&passwd).find(|f| field_id(f, 2) == Some(uid)) {
                    Some(f) => (
                        uid,
                        field_id(&f, 3).unwrap_or(uid),
                        f.first().map(|n| n.to_string()),
                        f.get(5).map(|h| h.to_string()),
                    ),
                    None => (uid, uid, None, None),
                }
            }
        },
    };
    if let Some(g) = group {
        gid = group_id(&groups, g).ok_or(format!("Group: unknown group '{g}' (not in {GROUP})"))?;
    }
    let mut list = Vec::new();
    for g in supplementary {
        let id = group_id(&groups, g).ok_or(format!(
            "SupplementaryGroups: unknown group '{g}' (not in {GROUP})"
        ))?;
        if !list.contains(&id) {
            list.push(id);
        }
    }
    if let Some(n) = &name {
        for f in entries(&groups) {
            let member = f
                .get(3)
                .is_some_and(|m| m.split(',').any(|m| m == n.as_str()));
            if let (true, Some(id)) = (member, field_id(&f, 2)) {
                if !list.contains(&id) {
                    list.push(id);
                }
            }
        }
    }
    Ok(Some(RunAs {
        uid,
        gid,
        groups: list,
        name,
        home,
    }))
}

fn read(path: &str) -> String {
    crate::sys::read_regular(Path::new(path), MAX_DB_BYTES).unwrap_or_default()
}

/// The colon-separated fields of each entry (comments and blank lines
/// skipped).
fn entries(text: &str) -> impl Iterator<Item = Vec<&str>> {
    text.lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .map(|l| l.split(':').collect())
}

fn field_id(f: &[&str], i: usize) -> Option<u32> {
    f.get(i).and_then(|v| number(v))
}

fn number(v: &str) -> Option<u32> {
    if v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    v.parse().ok()
}

fn group_id(groups: &str, g: &str) -> Option<u32> {
    entries(groups)
        .find(|f| f.first() == Some(&g))
        .and_then(|f| field_id(&f, 2))
        .or_else(|| number(g))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_numbers() {
        // Every image has root; the test machine has nobody and nogroup.
        let root = resolve(Some("root"), None, &[]).unwrap().unwrap();
        assert_eq!((root.uid, root.gid), (0, 0));
        assert_eq!(root.name.as_deref(), Some("root"));
        assert_eq!(root.home.as_deref(), Some("/root"));
        let n = resolve(Some("65534"), Some("12345"), &["0".into()])
            .unwrap()
            .unwrap();
        assert_eq!((n.uid, n.gid), (65534, 12345));
        assert!(n.groups.contains(&0));
        let e = resolve(Some("no-such-user-x"), None, &[]).unwrap_err();
        assert_eq!(
            e,
            "User: unknown user 'no-such-user-x' (not in /etc/passwd)"
        );
        let e = resolve(None, Some("no-such-group-x"), &[]).unwrap_err();
        assert!(
            e.starts_with("Group: unknown group 'no-such-group-x'"),
            "{e}"
        );
        let e = resolve(None, None, &["no-such-group-x".into()]).unwrap_err();
        assert!(e.starts_with("SupplementaryGroups: unknown group"), "{e}");
        assert_eq!(resolve(None, None, &[]), Ok(None));
        assert!(number("-1").is_none() && number("4294967296").is_none());
    }
}
