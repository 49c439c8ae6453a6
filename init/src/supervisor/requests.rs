//! Control requests: what each one does to the services, and the answers
//! held back until a stop or restart has happened. Enable, disable and
//! reload live here too.

use super::*;

impl Supervisor {
    /// Answer a request now (Some), or later through a waiter (None).
    pub(super) fn handle(&mut self, cid: usize, req: Request) -> Option<Response> {
        self.requests += 1;
        let name = match &req {
            Request::ServiceStatus { name }
            | Request::ServiceStart { name }
            | Request::ServiceStop { name }
            | Request::ServiceRestart { name }
            | Request::ServiceEnable { name, .. }
            | Request::ServiceDisable { name }
            | Request::ServiceLogs { name, .. }
            | Request::ServiceLogsClear { name }
            | Request::ServiceLogsFollow { name, .. } => Some(name.clone()),
            _ => None,
        };
        if let Some(n) = &name {
            if let Err(e) = unit::validate_name(n) {
                return Some(Response::err(e));
            }
        }
        let name = name.unwrap_or_default();
        // Enable works on files init may not know yet.
        if let Request::ServiceEnable { now, .. } = req {
            return Some(self.enable(&name, now));
        }
        let id = self.id_of(&name);
        let unknown = || Some(Response::err(format!("Service '{name}' not found")));
        match req {
            Request::Ping => Some(Response::Pong),
            Request::ListServices => Some(Response::ServiceList {
                services: self.listed().map(|(_, s)| summary(s)).collect(),
            }),
            Request::SystemStatus => Some(Response::SystemStatus {
                status: SystemStatus {
                    uptime_secs: self.started_at.elapsed().as_secs(),
                    total_services: self.listed().count(),
                    active_services: self.listed().filter(|(_, s)| s.m.state.active()).count(),
                    enabled_services: self.listed().filter(|(_, s)| s.enabled()).count(),
                    log_dir: self.cfg.log_dir.clone(),
                    service_dir: self.cfg.service_dir.clone(),
                },
            }),
            Request::ServiceStatus { .. } => match id {
                Some(id) => self
                    .status(id)
                    .map(|status| Response::ServiceStatus { status }),
                None => unknown(),
            },
            Request::ServiceStart { .. } => match id {
                Some(id) => self.start_request(id, &name),
                None => unknown(),
            },
            Request::ServiceStop { .. } => match id {
                Some(id) => self.stop_request(cid, id, &name),
                None => unknown(),
            },
            Request::ServiceRestart { .. } => match id {
                Some(id) => self.restart_request(cid, id, &name),
                None => unknown(),
            },
            Request::ServiceDisable { .. } => self.disable(cid, &name),
            Request::ServiceLogs { lines, .. } => match id {
                Some(id) => Some(Response::ServiceLogs {
                    logs: self.tail(id, lines),
                }),
                None => unknown(),
            },
            Request::ServiceLogsFollow { lines, .. } => match id {
                Some(id) => {
                    let logs = self.tail(id, lines);
                    if let Some(c) = self.conns.get_mut(&cid) {
                        c.start_follow(id, &Response::ServiceLogs { logs });
                    }
                    None
                }
                None => unknown(),
            },
            Request::ServiceLogsClear { .. } => match id {
                Some(id) => {
                    let r = self
                        .services
                        .get_mut(&id)
                        .map(|s| s.log.clear(&self.logset));
                    Some(match r {
                        Some(Ok(())) => Response::ok(format!("Logs of '{name}' cleared")),
                        Some(Err(e)) => {
                            Response::err(format!("cannot clear logs of '{name}': {e}"))
                        }
                        None => Response::err(format!("Service '{name}' not found")),
                    })
                }
                None => unknown(),
            },
            Request::SystemReload => Some(match self.ending {
                Some(_) => Response::err("system is shutting down"),
                None => Response::ok(self.reload()),
            }),
            Request::SystemShutdown | Request::SystemReboot => {
                let how = if req == Request::SystemReboot {
                    Ending::Reboot
                } else {
                    Ending::PowerOff
                };
                if let Some(c) = self.conns.get_mut(&cid) {
                    c.send(&Response::ok(if how == Ending::Reboot {
                        "System is rebooting"
                    } else {
                        "System is shutting down"
                    }));
                    c.flush(Instant::now());
                }
                self.begin_ending(how);
                None
            }
            Request::ServiceEnable { .. } => None, // answered above
        }
    }

    /// Services shown to clients: not those a reload removed.
    pub(super) fn listed(&self) -> impl Iterator<Item = (&usize, &Service)> {
        self.services.iter().filter(|(_, s)| !s.removed)
    }

    pub(super) fn status(&self, id: usize) -> Option<ServiceStatus> {
        let s = self.services.get(&id)?;
        let (lines, bytes) = s.log.dropped();
        let d = s.def.as_ref();
        Some(ServiceStatus {
            name: s.name.clone(),
            enabled: s.enabled(),
            active: s.m.state.active(),
            pid: s.proc_.as_ref().map(|p| p.pid.as_raw() as u32),
            restart_policy: d.map_or("no", |d| d.restart.as_str()).into(),
            restart_count: s.m.restart_count,
            restart_sec: d.map_or(0, |d| d.restart_sec),
            exit_status: s.m.last_exit.map(|e| e.code),
            exec_start: d.map(|d| d.exec_start.clone()).unwrap_or_default(),
            working_directory: d.and_then(|d| d.working_directory.clone()),
            dependencies: s.deps(),
            state: s.state_name().into(),
            signal: s.m.last_exit.and_then(|e| e.signal).map(sys::signal_name),
            reason: s.load_error.clone().or_else(|| s.m.reason.clone()),
            waiting_on: match &s.m.reason {
                Some(r) if s.m.state == State::Waiting => r
                    .trim_start_matches("waiting for ")
                    .split(", ")
                    .map(String::from)
                    .collect(),
                _ => Vec::new(),
            },
            timeout_stop_sec: d.map_or(0, |d| d.timeout_stop_sec),
            log_dropped_lines: lines,
            log_dropped_bytes: bytes,
        })
    }

    pub(super) fn tail(&self, id: usize, lines: usize) -> Vec<String> {
        let Some(s) = self.services.get(&id) else {
            return Vec::new();
        };
        let mut logs = s.log.tail(&self.logset, lines.min(shared::MAX_LOG_LINES));
        // Keep the answer bounded: drop the oldest lines past the cap.
        let mut size = 0;
        let keep = logs
            .iter()
            .rev()
            .take_while(|l| {
                size += l.len() + 4;
                size <= MAX_LOGS_RESPONSE
            })
            .count();
        let skip = logs.len() - keep;
        logs.drain(..skip);
        logs
    }

    pub(super) fn start_request(&mut self, id: usize, name: &str) -> Option<Response> {
        if self.ending.is_some() {
            return Some(Response::err("system is shutting down"));
        }
        let s = self.services.get(&id)?;
        if s.def.is_none() && s.pending.is_none() {
            return Some(Response::err(format!(
                "Service '{name}' is invalid: {}",
                s.load_error.clone().unwrap_or_default()
            )));
        }
        if s.m.state == State::Running {
            return Some(Response::ok(format!("Service '{name}' is already running")));
        }
        self.start(id, true);
        let s = self.services.get(&id)?;
        Some(match s.m.state {
            State::Running => Response::ok(format!("Service '{name}' started")),
            State::Stopping => Response::ok(format!(
                "Service '{name}' will start once its old process has exited"
            )),
            State::Waiting => Response::ok(format!(
                "Service '{name}' is {}",
                s.m.reason.clone().unwrap_or_else(|| "waiting".into())
            )),
            _ => Response::err(format!(
                "Service '{name}' failed to start: {}",
                s.m.reason.clone().unwrap_or_default()
            )),
        })
    }

    pub(super) fn stop_request(&mut self, cid: usize, id: usize, name: &str) -> Option<Response> {
        let set = self.stop_set(id);
        if set
            .iter()
            .all(|x| self.services.get(x).is_none_or(|s| s.m.state.down()))
        {
            return Some(Response::ok(format!("Service '{name}' is not running")));
        }
        let what = self.stop_phrase(name, &set);
        let kind = WaitKind::Stop {
            done: format!("{what} stopped"),
            late: format!("{what} still stopping (SIGKILL follows at the stop timeout)"),
        };
        self.stop_and_wait(cid, set, kind);
        None
    }

    /// "Service 'a'", plus what requires it when that is stopped too.
    fn stop_phrase(&self, name: &str, set: &[usize]) -> String {
        let also: Vec<&str> = set
            .iter()
            .skip(1)
            .filter_map(|d| self.services.get(d).map(|s| s.name.as_str()))
            .collect();
        if also.is_empty() {
            format!("Service '{name}'")
        } else {
            format!(
                "Service '{name}' and what requires it ({})",
                also.join(", ")
            )
        }
    }

    fn stop_and_wait(&mut self, cid: usize, set: Vec<usize>, kind: WaitKind) {
        self.stop_queue.extend(set.iter().copied());
        self.wait(cid, set, kind);
    }

    pub(super) fn restart_request(
        &mut self,
        cid: usize,
        id: usize,
        name: &str,
    ) -> Option<Response> {
        if self.ending.is_some() {
            return Some(Response::err("system is shutting down"));
        }
        let old = self
            .services
            .get(&id)
            .and_then(|s| s.proc_.as_ref())
            .map(|p| p.pid);
        self.stop_queue.remove(&id);
        self.feed(id, Event::Restart);
        self.wait(cid, vec![id], WaitKind::Restart(name.to_string(), old));
        None
    }

    pub(super) fn wait(&mut self, cid: usize, ids: Vec<usize>, kind: WaitKind) {
        if let Some(c) = self.conns.get_mut(&cid) {
            c.busy = true;
        }
        self.waiters.push(Waiter {
            conn: cid,
            ids,
            kind,
            deadline: Instant::now() + REPLY_WAIT,
        });
    }

    pub(super) fn answer_waiters(&mut self) {
        let now = Instant::now();
        let waiters = std::mem::take(&mut self.waiters);
        for w in waiters {
            let states: Vec<(State, Option<Pid>, Option<String>, bool)> = w
                .ids
                .iter()
                .filter_map(|id| self.services.get(id))
                .map(|s| {
                    (
                        s.m.state,
                        s.proc_.as_ref().map(|p| p.pid),
                        s.m.reason.clone(),
                        s.m.start_after_stop,
                    )
                })
                .collect();
            let reply = match &w.kind {
                WaitKind::Stop { done, late } => {
                    if states.iter().all(|(st, ..)| st.down()) {
                        Some(Response::ok(done.clone()))
                    } else if now >= w.deadline {
                        Some(Response::ok(late.clone()))
                    } else {
                        None
                    }
                }
                WaitKind::Restart(name, old) => match states.first() {
                    Some((State::Running, pid, ..)) if pid != old => {
                        Some(Response::ok(format!("Service '{name}' restarted")))
                    }
                    Some((State::Failed | State::Inactive, _, why, false)) => {
                        Some(Response::err(format!(
                            "Service '{name}' did not restart: {}",
                            why.clone().unwrap_or_else(|| "it is stopped".into())
                        )))
                    }
                    _ if now >= w.deadline => Some(Response::ok(format!(
                        "Service '{name}' is restarting (waiting for the old process to exit)"
                    ))),
                    None => Some(Response::err(format!("Service '{name}' is gone"))),
                    _ => None,
                },
            };
            match reply {
                Some(r) => {
                    if let Some(c) = self.conns.get_mut(&w.conn) {
                        c.send(&r);
                        c.busy = false;
                    }
                }
                None => self.waiters.push(w),
            }
        }
    }

    pub(super) fn enable(&mut self, name: &str, now: bool) -> Response {
        let dir = PathBuf::from(&self.cfg.service_dir);
        let on = unit::unit_path(&dir, name, true);
        let off = unit::unit_path(&dir, name, false);
        let mut msg;
        // `ServiceEnable = false` in the file on disk keeps it disabled
        // whatever the file is called: refuse before renaming anything.
        let file = if on.exists() { &on } else { &off };
        let turned_off = std::fs::read_to_string(file)
            .ok()
            .and_then(|t| unit::parse(&t).ok())
            .is_some_and(|(d, _)| !d.service_enable);
        if turned_off {
            let then = if file == &on {
                "run 'initctl reload'".to_string()
            } else {
                format!("run 'initctl enable {name}'")
            };
            return Response::err(format!(
                "Service '{name}' is disabled by 'ServiceEnable = false' in {}; set it to true, then {then}",
                file.display()
            ));
        }
        if on.exists() {
            if self.id_of(name).is_none() {
                // A file init has not loaded yet.
                self.reload_one(name, &on);
            }
            msg = format!("Service '{name}' is already enabled");
        } else if off.exists() {
            if let Err(e) = std::fs::rename(&off, &on) {
                return Response::err(format!(
                    "cannot rename {} to {}: {e}",
                    off.display(),
                    on.display()
                ));
            }
            msg = format!(
                "Service '{name}' enabled ({} renamed to {})",
                file_name(&off),
                file_name(&on)
            );
            self.reload_one(name, &on);
        } else {
            return Response::err(format!("Service '{name}' not found in {}", dir.display()));
        }
        if now {
            match self.id_of(name) {
                Some(id) => match self.start_request(id, name) {
                    Some(Response::Error { message }) => {
                        return Response::err(format!("{msg}; but {message}"))
                    }
                    Some(Response::Success { message }) => msg = format!("{msg}; {message}"),
                    _ => {}
                },
                None => return Response::err(format!("{msg}; but it could not be loaded")),
            }
        }
        Response::ok(msg)
    }

    /// Answered at once, or (None) once the service has stopped.
    pub(super) fn disable(&mut self, cid: usize, name: &str) -> Option<Response> {
        let dir = PathBuf::from(&self.cfg.service_dir);
        let on = unit::unit_path(&dir, name, true);
        let off = unit::unit_path(&dir, name, false);
        if !on.exists() {
            return Some(if off.exists() {
                Response::ok(format!("Service '{name}' is already disabled"))
            } else {
                Response::err(format!("Service '{name}' not found in {}", dir.display()))
            });
        }
        if off.exists() {
            return Some(Response::err(format!(
                "cannot disable '{name}': {} already exists; remove one of the two files",
                off.display()
            )));
        }
        if let Err(e) = std::fs::rename(&on, &off) {
            return Some(Response::err(format!(
                "cannot rename {} to {}: {e}",
                on.display(),
                off.display()
            )));
        }
        let msg = format!(
            "Service '{name}' disabled ({} renamed to {})",
            file_name(&on),
            file_name(&off)
        );
        let Some(id) = self.id_of(name) else {
            return Some(Response::ok(msg));
        };
        if let Some(s) = self.services.get_mut(&id) {
            s.file_enabled = false;
        }
        if self.services.get(&id).is_none_or(|s| s.m.state.down()) {
            return Some(Response::ok(msg));
        }
        let set = self.stop_set(id);
        let what = self.stop_phrase(name, &set).replacen("Service '", "'", 1);
        let kind = WaitKind::Stop {
            done: format!("{msg}; {what} stopped"),
            late: format!("{msg}; {what} still stopping"),
        };
        self.stop_and_wait(cid, set, kind);
        None
    }

    /// Load or refresh one service file (after enable).
    pub(super) fn reload_one(&mut self, name: &str, path: &Path) {
        let Ok(units) = unit::scan(Path::new(&self.cfg.service_dir)) else {
            return;
        };
        let Some(u) = units.into_iter().find(|u| u.name == name) else {
            return;
        };
        match self.id_of(name) {
            Some(id) => {
                if let Err(e) = self.update_service(id, u) {
                    error!("{}: {e}", path.display());
                }
            }
            None => {
                self.add_service(u);
            }
        }
        self.compute_order(false);
    }

    /// Apply a re-read file to a known service. Returns whether the
    /// definition changed, or the error.
    pub(super) fn update_service(&mut self, id: usize, u: UnitFile) -> Result<bool, String> {
        let Some(s) = self.services.get_mut(&id) else {
            return Ok(false);
        };
        s.file_enabled = u.file_enabled;
        match u.def {
            Ok(new) => {
                s.load_error = None;
                let current = s.pending.as_ref().or(s.def.as_ref());
                if current == Some(&new) {
                    return Ok(false);
                }
                if s.m.state.active() && s.def.is_some() {
                    s.pending = Some(new);
                } else {
                    s.def = Some(new);
                    s.pending = None;
                }
                Ok(true)
            }
            Err(e) => {
                if !s.m.state.active() {
                    s.def = None;
                }
                s.pending = None;
                s.load_error = Some(e.clone());
                Err(e)
            }
        }
    }

    /// Re-read init.yaml's service settings and every service file; start
    /// what is new, stop what is gone, keep what runs unchanged.
    pub fn reload(&mut self) -> String {
        let mut errors = Vec::new();
        let loaded = crate::config::load(&self.config_path);
        if let Some(e) = loaded.error {
            errors.push(e);
        } else if loaded.source.is_some() {
            let c = loaded.config;
            self.cfg.environment = c.environment;
            self.cfg.max_log_size = c.max_log_size;
            self.cfg.max_log_files = c.max_log_files;
            self.cfg.service_dir = c.service_dir;
            self.logset = log_settings(&self.cfg);
        }
        let units = match unit::scan(Path::new(&self.cfg.service_dir)) {
            Ok(u) => u,
            Err(e) => {
                errors.push(e);
                return format!("reload failed: {}", errors.join("; "));
            }
        };
        let (mut added, mut removed, mut changed) = (Vec::new(), Vec::new(), Vec::new());
        let seen: BTreeSet<String> = units.iter().map(|u| u.name.clone()).collect();
        for (id, s) in self.services.iter_mut() {
            if !seen.contains(&s.name) && !s.removed {
                s.removed = true;
                removed.push(s.name.clone());
                self.stop_queue.insert(*id);
            }
        }
        let mut new_ids = Vec::new();
        for u in units {
            let name = u.name.clone();
            let path = u.path.display().to_string();
            match self.id_of(&name) {
                Some(id) => {
                    // Invalid since it was loaded and never run: once fixed it
                    // is as good as new, and starts if enabled.
                    let fixed = self.services.get(&id).is_some_and(|s| {
                        s.def.is_none() && s.m.state == State::Inactive && s.m.last_exit.is_none()
                    });
                    match self.update_service(id, u) {
                        Ok(true) => {
                            if fixed {
                                new_ids.push(id);
                            }
                            changed.push(name)
                        }
                        Ok(false) => {}
                        Err(e) => errors.push(format!("{path}: {e}")),
                    }
                }
                None => {
                    if let Err(e) = &u.def {
                        errors.push(format!("{path}: {e}"));
                    }
                    new_ids.push(self.add_service(u));
                    added.push(name);
                }
            }
        }
        self.compute_order(true);
        for id in self.order.clone() {
            if new_ids.contains(&id)
                && self
                    .services
                    .get(&id)
                    .is_some_and(|s| s.enabled() && s.def.is_some())
            {
                self.start(id, false);
            }
        }
        let list = |v: &Vec<String>| {
            if v.is_empty() {
                "none".to_string()
            } else {
                v.join(", ")
            }
        };
        let mut msg = format!(
            "Reloaded: added {}; removed {}; changed {}",
            list(&added),
            list(&removed),
            list(&changed)
        );
        if !changed.is_empty() {
            msg.push_str(" (running services keep their old definition until restarted)");
        }
        if !errors.is_empty() {
            msg.push_str(&format!("; errors: {}", errors.join("; ")));
        }
        msg
    }
}

pub(super) fn summary(s: &Service) -> ServiceSummary {
    ServiceSummary {
        name: s.name.clone(),
        enabled: s.enabled(),
        active: s.m.state.active(),
        restart_policy: s.def.as_ref().map_or("no", |d| d.restart.as_str()).into(),
        restart_count: s.m.restart_count,
        state: s.state_name().into(),
    }
}

pub(super) fn file_name(p: &Path) -> String {
    p.file_name()
        .map(|f| f.to_string_lossy().into_owned())
        .unwrap_or_default()
}
