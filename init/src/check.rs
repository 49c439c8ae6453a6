//! `init --check`: validate init.yaml and every service file, print the
//! start order and each problem with its file, start nothing. Exit 1 on
//! errors, 0 otherwise (warnings allowed).

use crate::{config, graph, spawn, unit};
use std::path::Path;

pub fn run(path: &Path) -> i32 {
    let mut errors = Vec::new();
    let mut warnings = Vec::new();
    let loaded = config::load(path);
    warnings.extend(loaded.warnings);
    errors.extend(loaded.errors);
    let cfg = loaded.config;
    println!(
        "config: {}",
        loaded
            .source
            .map_or("(built-in defaults)".into(), |p| p.display().to_string())
    );
    println!("service_dir: {}", cfg.service_dir);
    let units = match unit::scan(Path::new(&cfg.service_dir)) {
        Ok(u) => u,
        Err(e) => {
            errors.push(e);
            Vec::new()
        }
    };
    let mut nodes = Vec::new();
    for u in &units {
        let file = u.path.display();
        for w in &u.warnings {
            warnings.push(format!("{file}: {w}"));
        }
        match &u.def {
            Err(e) => errors.push(format!("{file}: {e}")),
            Ok(d) => {
                for r in &d.requires {
                    match units.iter().find(|x| &x.name == r) {
                        None => {
                            errors.push(format!("{file}: Requires names unknown service '{r}'"))
                        }
                        Some(x) if !x.enabled() && u.enabled() => warnings.push(format!(
                            "{file}: requires '{r}', which is disabled: it will not start"
                        )),
                        _ => {}
                    }
                }
                if let Some(dir) = &d.working_directory {
                    if !Path::new(dir).is_dir() {
                        warnings.push(format!("{file}: WorkingDirectory {dir} does not exist"));
                    }
                }
                if let Some(prog) = d.argv.first() {
                    if !program_exists(prog, &spawn::service_path(d, &cfg.environment)) {
                        warnings.push(format!("{file}: ExecStart program '{prog}' not found"));
                    }
                }
            }
        }
        nodes.push(graph::Node::new(&u.name, u.def.as_ref().ok()));
    }
    let order = graph::order(&nodes);
    // "owner: After names unknown service 'x'": name the owner's file.
    warnings.extend(order.warnings.iter().map(|w| {
        match w
            .split_once(": ")
            .and_then(|(owner, rest)| Some((units.iter().find(|u| u.name == owner)?, rest)))
        {
            Some((u, rest)) => format!("{}: {rest}", u.path.display()),
            None => w.clone(),
        }
    }));
    for c in &order.cycles {
        errors.push(format!("dependency cycle: {c}"));
    }
    println!("start order:");
    for (i, n) in order.order.iter().enumerate() {
        let u = units.iter().find(|u| &u.name == n);
        let tag = match u {
            Some(u) if u.def.is_err() => " (invalid)",
            Some(u) if !u.enabled() => " (disabled)",
            _ => "",
        };
        println!("  {}. {n}{tag}", i + 1);
    }
    for w in &warnings {
        println!("warning: {w}");
    }
    for e in &errors {
        println!("error: {e}");
    }
    println!(
        "{} services, {} errors, {} warnings",
        units.len(),
        errors.len(),
        warnings.len()
    );
    i32::from(!errors.is_empty())
}

/// Is `prog` there, as the service's exec will look for it on `path`?
fn program_exists(prog: &str, path: &std::ffi::OsStr) -> bool {
    if prog.contains('/') {
        return Path::new(prog).exists();
    }
    std::env::split_paths(path).any(|d| d.join(prog).exists())
}
