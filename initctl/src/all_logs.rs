//! `initctl logs` without a name (or `--all`): every service's lines,
//! merged in time order by the timestamp each line starts with, each after
//! its service's name. `-f` asks init to follow every service on one
//! connection (`ServiceLogsFollowAll`: services a reload adds too); an
//! init without it (one that answers with an error) gets one follow
//! connection per service, poll(2)ed together, as before: services added
//! after the start are not followed then. Either way lines that arrive
//! together are merged, later ones printed as they come, and stdout is
//! watched so that it ends when the reader goes away.

use crate::transport::{Conn, Endpoint};
use crate::{ask, fail, open, parse_response, read_answer, write_stderr, write_stdout};
use crate::{Cli, Fail, EXIT_ERROR, EXIT_OK};
use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use shared::protocol::{Request, Response};
use std::io;
use std::os::fd::AsFd;

/// The `YYYY-MM-DD HH:MM:SS.mmm` of a line that starts `[stamp] `.
fn stamp(line: &str) -> Option<&str> {
    let s = line.strip_prefix('[')?.get(..23)?;
    (line.get(24..25) == Some("]")).then_some(s)
}

/// Merge each service's lines (each in its own order) by timestamp; a line
/// without one keeps the stamp of the line before it in its service, and
/// equal stamps keep their order (the services' order, then the lines').
/// Each line comes out after its service's name, padded to `width`.
pub fn merge(batches: &[(&str, Vec<String>)], width: usize) -> Vec<String> {
    let mut all: Vec<(String, String)> = Vec::new();
    for (name, lines) in batches {
        let mut last = String::new();
        for line in lines {
            if let Some(s) = stamp(line) {
                last = s.to_string();
            }
            all.push((last.clone(), format!("{name:<width$} {line}")));
        }
    }
    all.sort_by(|a, b| a.0.cmp(&b.0));
    all.into_iter().map(|(_, line)| line).collect()
}

/// Print merged lines (with --json as one `ServiceLogs` answer).
fn print(cli: &Cli, lines: Vec<String>) -> Result<(), Fail> {
    if lines.is_empty() {
        return Ok(());
    }
    if cli.json {
        let r = Response::ServiceLogs { logs: lines };
        let text = serde_json::to_string(&r).map_err(|e| fail(e.to_string()))?;
        return write_stdout(&format!("{text}\n"));
    }
    let mut text = String::new();
    for l in lines {
        text.push_str(&l);
        text.push('\n');
    }
    write_stdout(&text)
}

/// Keep the last `n`.
fn last(mut lines: Vec<String>, n: usize) -> Vec<String> {
    let cut = lines.len().saturating_sub(n);
    lines.drain(..cut);
    lines
}

pub fn run(cli: &Cli, endpoint: &Endpoint, lines: usize, follow: bool) -> Result<i32, Fail> {
    let (line, response) = ask(cli, endpoint, &Request::ListServices)?;
    let names: Vec<String> = match response {
        Response::ServiceList { services } => services.into_iter().map(|s| s.name).collect(),
        Response::Error { message } => {
            write_stderr(&format!("✗ Error: {message}\n"));
            return Ok(EXIT_ERROR);
        }
        _ => return Err(fail(format!("unexpected answer to ListServices: {line}"))),
    };
    if names.is_empty() {
        write_stderr("No services found\n");
        return Ok(EXIT_OK);
    }
    let width = names.iter().map(String::len).max().unwrap_or(0);
    let mut code = EXIT_OK;
    let mut err = |name: &str, message: &str| {
        write_stderr(&format!("✗ Error: {name}: {message}\n"));
        code = EXIT_ERROR;
    };
    if !follow {
        let mut batches = Vec::new();
        for name in &names {
            let request = Request::ServiceLogs {
                name: name.clone(),
                lines,
            };
            match ask(cli, endpoint, &request)?.1 {
                Response::ServiceLogs { logs } => batches.push((name.as_str(), logs)),
                Response::Error { message } => err(name, &message),
                _ => err(name, "unexpected answer"),
            }
        }
        print(cli, last(merge(&batches, width), lines))?;
        return Ok(code);
    }
    if let Some(code) = follow_all(cli, endpoint, lines, width)? {
        return Ok(code);
    }
    // One follow connection each; the first answers are the tails.
    let mut conns: Vec<(&str, Conn)> = Vec::new();
    let mut batches = Vec::new();
    for name in &names {
        let request = Request::ServiceLogsFollow {
            name: name.clone(),
            lines,
        };
        let (mut conn, deadline) = open(cli, endpoint, &request)?;
        let first = read_answer(cli, endpoint, &mut conn, Some(deadline))?.unwrap_or_default();
        match parse_response(&first, endpoint)? {
            Response::ServiceLogs { logs } => {
                batches.push((name.as_str(), logs));
                conns.push((name.as_str(), conn));
            }
            Response::Error { message } => err(name, &message),
            _ => err(name, "unexpected answer"),
        }
    }
    print(cli, last(merge(&batches, width), lines))?;
    let gone = PollFlags::POLLERR | PollFlags::POLLHUP | PollFlags::POLLNVAL;
    let stdout = io::stdout();
    while !conns.is_empty() {
        let mut fds: Vec<PollFd> = conns
            .iter()
            .map(|(_, c)| PollFd::new(c.fd(), PollFlags::POLLIN))
            .collect();
        fds.push(PollFd::new(stdout.as_fd(), PollFlags::empty()));
        match poll(&mut fds, PollTimeout::NONE) {
            Ok(_) => {}
            Err(Errno::EINTR) => continue,
            Err(e) => return Err(fail(format!("poll: {e}"))),
        }
        let ready: Vec<bool> = fds
            .iter()
            .map(|f| f.revents().is_some_and(|r| !r.is_empty()))
            .collect();
        if fds
            .last()
            .and_then(PollFd::revents)
            .is_some_and(|r| r.intersects(gone))
        {
            return Ok(code);
        }
        drop(fds);
        let mut batches = Vec::new();
        let mut closed = Vec::new();
        for (i, (name, conn)) in conns.iter_mut().enumerate() {
            if !ready.get(i).copied().unwrap_or(false) {
                continue;
            }
            let open = conn
                .read_some()
                .map_err(|e| fail(format!("cannot read from init at {endpoint}: {e}")))?;
            let mut logs = Vec::new();
            while let Some(line) = conn
                .take_line()
                .map_err(|e| fail(format!("cannot read from init at {endpoint}: {e}")))?
            {
                match parse_response(&line, endpoint)? {
                    Response::ServiceLogs { logs: more } => logs.extend(more),
                    Response::Error { message } => {
                        err(name, &message);
                        closed.push(i);
                    }
                    _ => err(name, "unexpected answer"),
                }
            }
            if !open {
                closed.push(i);
            }
            batches.push((*name, logs));
        }
        print(cli, merge(&batches, width))?;
        let mut i = 0;
        conns.retain(|_| {
            i += 1;
            !closed.contains(&(i - 1))
        });
    }
    Ok(code)
}

/// Follow every service on one connection. None if init does not know
/// the request (it answers with an error): the caller falls back to a
/// connection per service.
fn follow_all(
    cli: &Cli,
    endpoint: &Endpoint,
    lines: usize,
    width: usize,
) -> Result<Option<i32>, Fail> {
    let request = Request::ServiceLogsFollowAll { lines };
    let (mut conn, deadline) = open(cli, endpoint, &request)?;
    let mut deadline = Some(deadline);
    let mut first = true;
    loop {
        if deadline.is_none() && !conn.has_line() {
            match conn.wait_readable_or_gone(io::stdout().as_fd()) {
                Ok(true) => return Ok(Some(EXIT_OK)),
                Ok(false) => {}
                Err(e) => return Err(fail(format!("poll: {e}"))),
            }
        }
        let Some(line) = read_answer(cli, endpoint, &mut conn, deadline)? else {
            return Ok(Some(EXIT_OK));
        };
        match parse_response(&line, endpoint)? {
            Response::ServicesLogs { mut logs } => {
                let batches: Vec<(&str, Vec<String>)> = logs
                    .iter_mut()
                    .map(|l| (l.service.as_str(), std::mem::take(&mut l.logs)))
                    .collect();
                let merged = merge(&batches, width);
                print(cli, if first { last(merged, lines) } else { merged })?;
            }
            Response::Error { .. } if first => return Ok(None),
            Response::Error { message } => {
                write_stderr(&format!("✗ Error: {message}\n"));
                return Ok(Some(EXIT_ERROR));
            }
            _ => {
                return Err(fail(format!(
                    "unexpected answer to ServiceLogsFollowAll: {line}"
                )))
            }
        }
        first = false;
        // No time limit after the first answer.
        deadline = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merged_by_stamp_stable_and_prefixed() {
        let a = vec![
            "[2026-01-01 00:00:00.100] a1".to_string(),
            "continued without a stamp".into(),
            "[2026-01-01 00:00:00.300] a2".into(),
        ];
        let b = vec![
            "[2026-01-01 00:00:00.100] b1".to_string(),
            "[2026-01-01 00:00:00.200] [stderr] b2".into(),
        ];
        let m = merge(&[("alpha", a), ("b", b)], 5);
        assert_eq!(
            m,
            vec![
                "alpha [2026-01-01 00:00:00.100] a1",
                "alpha continued without a stamp",
                "b     [2026-01-01 00:00:00.100] b1",
                "b     [2026-01-01 00:00:00.200] [stderr] b2",
                "alpha [2026-01-01 00:00:00.300] a2",
            ]
        );
        assert_eq!(last(m, 2).len(), 2);
        assert_eq!(stamp("[short] x"), None);
    }
}
