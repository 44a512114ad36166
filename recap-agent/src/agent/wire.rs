//! The agent's typed request (`api::WindowSpec`) and the window it asks for
//! (`window::WindowSpec`), both ways: the CLI sends what its flags became; the agent takes what
//! any client sent, bounded field by field, then checked as the CLI checks its flags
//! (`WindowSpec::check`). Also the request as people read it (a `recap window` command line)
//! and as it may be stored (secrets redacted).

use std::{path::PathBuf, time::Duration};

use super::{api, audit};
use crate::{
    capsule::{CapsuleSpec, Tool},
    export::otlp::{self, Compression, OtlpConfig, Protocol, TlsFiles},
    families::Family,
    fleet::FleetWindow,
    targets::{pod::DEFAULT_CRI_ENDPOINT, TargetSpec},
    text::units::format_duration,
    window::{
        CapsuleOptions, ExportOptions, WindowSpec, DEFAULT_ARTIFACTS, DEFAULT_CAPSULE_MAX_BYTES,
    },
};

/// Bytes of any one text field (a path, a name, a header value, a capsule's word).
const MAX_TEXT: usize = 4096;
/// Words of one capsule.
const MAX_WORDS: usize = 64;
/// OTLP headers, and resource attributes.
const MAX_PAIRS: usize = 32;
/// Bytes of all text fields together (the argv the API took before was at most 256 KiB; a
/// request is stored twice in the history, as its spec and as its command line).
const MAX_TOTAL_TEXT: usize = 64 << 10;
/// The longest window the agent holds, whoever asks (a policy rule sets less for its callers).
pub const MAX_DURATION: Duration = Duration::from_secs(7 * 24 * 3600);
/// `--grpc-paths` unless told otherwise.
const DEFAULT_GRPC_PATHS: usize = 64;

/// What a client asked for, as the window it will be, and what only the request says.
#[derive(Debug)]
pub struct Request {
    pub spec: WindowSpec,
    /// The request named its own artifact directory (root only).
    pub artifacts_given: bool,
}

/// The window `spec` asks for, as the agent's API carries it (defaults left for the agent to
/// fill: the artifact directory and the CRI socket when they are the CLI's defaults).
pub fn to_wire(spec: &WindowSpec) -> api::WindowSpec {
    let artifacts = &spec.capsules.artifacts;
    api::WindowSpec {
        target: Some(target_to_wire(&spec.target)),
        target_only: spec.target_only,
        duration: Some(duration_to_wire(spec.duration)),
        families: spec
            .families
            .iter()
            .map(|f| family_to_wire(*f) as i32)
            .collect(),
        capsules: spec.capsules.specs.iter().map(capsule_to_wire).collect(),
        artifacts: if artifacts.as_os_str() == DEFAULT_ARTIFACTS {
            String::new()
        } else {
            artifacts.to_string_lossy().into_owned()
        },
        capsule_max_bytes: spec.capsules.max_bytes,
        otlp: spec.export.otlp.as_ref().map(otlp_to_wire),
        grpc_paths: spec.grpc_paths as u32,
    }
}

/// A target on the wire (the CRI socket left out when it is the default one).
pub fn target_to_wire(target: &TargetSpec) -> api::window_spec::Target {
    use api::window_spec::Target;
    let text = |p: &std::path::Path| p.to_string_lossy().into_owned();
    match target {
        TargetSpec::Cgroup { path } => Target::Cgroup(text(path)),
        TargetSpec::Pid { pid } => Target::Pid(*pid),
        TargetSpec::Container { name_or_id } => Target::Container(name_or_id.clone()),
        TargetSpec::Pod {
            namespace,
            name,
            container,
            cri_endpoint,
        } => Target::Pod(api::PodTarget {
            namespace: namespace.clone(),
            name: name.clone(),
            container: container.clone().unwrap_or_default(),
            cri_endpoint: if cri_endpoint.as_os_str() == DEFAULT_CRI_ENDPOINT {
                String::new()
            } else {
                text(cri_endpoint)
            },
        }),
    }
}

/// A fleet part's window on one target, as the agent's API asks for it: the request's options,
/// the target (none: only to show the options), and the time left to the deadline.
pub fn fleet_part(
    window: &FleetWindow,
    target: Option<&TargetSpec>,
    duration: Duration,
) -> api::WindowSpec {
    api::WindowSpec {
        target: target.map(target_to_wire),
        duration: Some(duration_to_wire(duration)),
        families: window
            .families
            .iter()
            .map(|f| family_to_wire(*f) as i32)
            .collect(),
        capsules: window.capsules.iter().map(capsule_to_wire).collect(),
        capsule_max_bytes: window.capsule_max_bytes,
        ..Default::default()
    }
}

pub fn capsule_to_wire(c: &CapsuleSpec) -> api::Capsule {
    api::Capsule {
        tool: tool_to_wire(c.tool) as i32,
        args: c.args.clone(),
    }
}

/// The window a client's request asks for, or why it cannot be one.
pub fn from_wire(w: api::WindowSpec) -> Result<Request, String> {
    use api::window_spec::Target;
    bounded(&w)?;
    let target = match w.target {
        None => return Err("give a target: cgroup, pid, container or pod".into()),
        Some(Target::Cgroup(path)) => TargetSpec::Cgroup {
            path: PathBuf::from(path),
        },
        Some(Target::Pid(pid)) => TargetSpec::Pid { pid },
        Some(Target::Container(name_or_id)) => TargetSpec::Container { name_or_id },
        Some(Target::Pod(p)) => TargetSpec::Pod {
            namespace: p.namespace,
            name: p.name,
            container: (!p.container.is_empty()).then_some(p.container),
            cri_endpoint: PathBuf::from(if p.cri_endpoint.is_empty() {
                DEFAULT_CRI_ENDPOINT.to_string()
            } else {
                p.cri_endpoint
            }),
        },
    };
    let duration = match w.duration {
        None => return Err("give a duration (more than 0)".into()),
        Some(d) => duration_from_wire(&d).ok_or_else(|| {
            format!(
                "a duration must be from 0 to {} (seconds and nanoseconds not negative)",
                format_duration(MAX_DURATION)
            )
        })?,
    };
    if duration > MAX_DURATION {
        return Err(format!(
            "duration {} is over the {} the agent holds a window for",
            format_duration(duration),
            format_duration(MAX_DURATION)
        ));
    }
    let mut families = w
        .families
        .iter()
        .map(|f| family_from_wire(*f))
        .collect::<Result<Vec<_>, _>>()?;
    if families.is_empty() {
        families = Family::defaults();
    }
    families.sort();
    families.dedup();
    let specs = w
        .capsules
        .into_iter()
        .map(|c| CapsuleSpec::new(tool_from_wire(c.tool)?, c.args))
        .collect::<Result<Vec<_>, _>>()?;
    let artifacts_given = !w.artifacts.is_empty();
    let spec = WindowSpec {
        target,
        target_only: w.target_only,
        duration,
        families,
        capsules: CapsuleOptions {
            specs,
            artifacts: if artifacts_given {
                PathBuf::from(w.artifacts)
            } else {
                PathBuf::from(DEFAULT_ARTIFACTS)
            },
            max_bytes: match w.capsule_max_bytes {
                0 => DEFAULT_CAPSULE_MAX_BYTES,
                n => n,
            },
            owner: None,
        },
        export: ExportOptions {
            prometheus: None,
            prometheus_linger: Duration::ZERO,
            otlp: w.otlp.map(otlp_from_wire).transpose()?,
        },
        grpc_paths: match w.grpc_paths {
            0 => DEFAULT_GRPC_PATHS,
            n => n as usize,
        },
    };
    spec.check()?;
    Ok(Request {
        spec,
        artifacts_given,
    })
}

/// Every text field within `MAX_TEXT` bytes, and every list within its bound: checked before
/// anything else reads the request (it came from anyone on the socket).
pub fn bounded(w: &api::WindowSpec) -> Result<(), String> {
    use api::window_spec::Target;
    let mut texts: Vec<&str> = vec![&w.artifacts];
    match &w.target {
        Some(Target::Cgroup(t)) | Some(Target::Container(t)) => texts.push(t),
        Some(Target::Pod(p)) => {
            texts.extend([&p.namespace, &p.name, &p.container, &p.cri_endpoint].map(String::as_str))
        }
        Some(Target::Pid(_)) | None => {}
    }
    if w.families.len() > Family::ALL.len() * 4 {
        return Err(format!(
            "a request names at most {} families",
            Family::ALL.len() * 4
        ));
    }
    if w.capsules.len() > Tool::ALL.len() {
        return Err(format!(
            "a request has at most {} capsules, each tool once",
            Tool::ALL.len()
        ));
    }
    for c in &w.capsules {
        if c.args.len() > MAX_WORDS {
            return Err(format!("a capsule takes at most {MAX_WORDS} words"));
        }
        texts.extend(c.args.iter().map(String::as_str));
    }
    if let Some(o) = &w.otlp {
        if o.headers.len() > MAX_PAIRS || o.resource.len() > MAX_PAIRS {
            return Err(format!(
                "OTLP export takes at most {MAX_PAIRS} headers and {MAX_PAIRS} resource attributes"
            ));
        }
        texts.extend(
            [
                &o.endpoint,
                &o.ca_file,
                &o.client_certificate_file,
                &o.client_key_file,
            ]
            .map(String::as_str),
        );
        for kv in o.headers.iter().chain(&o.resource) {
            texts.extend([kv.key.as_str(), kv.value.as_str()]);
        }
    }
    if texts.iter().any(|t| t.len() > MAX_TEXT) {
        return Err(format!(
            "a request's text fields are at most {MAX_TEXT} bytes each"
        ));
    }
    if texts.iter().map(|t| t.len()).sum::<usize>() > MAX_TOTAL_TEXT {
        return Err(format!(
            "a request's text fields are at most {MAX_TOTAL_TEXT} bytes together"
        ));
    }
    Ok(())
}

pub fn duration_to_wire(d: Duration) -> prost_types::Duration {
    prost_types::Duration {
        seconds: d.as_secs().min(i64::MAX as u64) as i64,
        nanos: d.subsec_nanos() as i32,
    }
}

/// `None` for a negative or malformed duration.
pub fn duration_from_wire(d: &prost_types::Duration) -> Option<Duration> {
    let seconds = u64::try_from(d.seconds).ok()?;
    let nanos = u32::try_from(d.nanos).ok().filter(|n| *n < 1_000_000_000)?;
    Some(Duration::new(seconds, nanos))
}

/// A family's enum value on the wire: `FAMILY_` and its name in capitals.
pub fn family_to_wire(f: Family) -> api::Family {
    api::Family::from_str_name(&format!("FAMILY_{}", f.name().to_uppercase()))
        .unwrap_or(api::Family::Unspecified)
}

fn family_from_wire(value: i32) -> Result<Family, String> {
    let unknown = || format!("unknown probe family (enum value {value})");
    let name = api::Family::try_from(value)
        .map_err(|_| unknown())?
        .as_str_name()
        .strip_prefix("FAMILY_")
        .ok_or_else(unknown)?
        .to_lowercase();
    name.parse::<Family>().map_err(|_| unknown())
}

/// A family's value on the wire as `--probes` names it (`#N` for one RECap does not have).
pub fn family_name(value: i32) -> String {
    family_from_wire(value).map_or_else(|_| format!("#{value}"), |f| f.name().into())
}

/// A capsule tool's value on the wire as `--capsule` names it (`#N` for one RECap does not
/// have).
pub fn tool_name(value: i32) -> String {
    tool_from_wire(value).map_or_else(|_| format!("#{value}"), |t| t.name().into())
}

/// A capsule tool's enum value on the wire: `CAPSULE_TOOL_` and its name in capitals.
pub fn tool_to_wire(t: Tool) -> api::CapsuleTool {
    api::CapsuleTool::from_str_name(&format!("CAPSULE_TOOL_{}", t.name().to_uppercase()))
        .unwrap_or(api::CapsuleTool::Unspecified)
}

fn tool_from_wire(value: i32) -> Result<Tool, String> {
    let name = api::CapsuleTool::try_from(value)
        .ok()
        .and_then(|t| t.as_str_name().strip_prefix("CAPSULE_TOOL_"))
        .map(str::to_lowercase);
    Tool::ALL
        .into_iter()
        .find(|t| Some(t.name()) == name.as_deref())
        .ok_or_else(|| format!("unknown capsule tool (enum value {value})"))
}

/// A window's status on the wire, from the name the history and the CLI use (`target_exited`).
pub fn status_to_wire(name: &str) -> api::WindowStatus {
    api::WindowStatus::from_str_name(&format!("WINDOW_STATUS_{}", name.to_uppercase()))
        .unwrap_or(api::WindowStatus::Unspecified)
}

/// The name of a status on the wire (`completed`, ...; `unspecified` for none).
pub fn status_name(value: i32) -> String {
    api::WindowStatus::try_from(value)
        .unwrap_or(api::WindowStatus::Unspecified)
        .as_str_name()
        .trim_start_matches("WINDOW_STATUS_")
        .to_lowercase()
}

fn pairs(kvs: &[(String, String)]) -> Vec<api::KeyValue> {
    kvs.iter()
        .map(|(key, value)| api::KeyValue {
            key: key.clone(),
            value: value.clone(),
        })
        .collect()
}

fn otlp_to_wire(o: &OtlpConfig) -> api::OtlpExport {
    let path = |p: &Option<PathBuf>| {
        p.as_ref()
            .map(|p| p.to_string_lossy().into_owned())
            .unwrap_or_default()
    };
    let (cert, key) = o.tls.client.clone().unzip();
    api::OtlpExport {
        endpoint: o.endpoint.clone(),
        protocol: match o.protocol {
            Protocol::Grpc => api::OtlpProtocol::Grpc,
            Protocol::HttpProtobuf => api::OtlpProtocol::HttpProtobuf,
        } as i32,
        headers: pairs(&o.headers),
        resource: pairs(&o.resource),
        interval: Some(duration_to_wire(o.interval)),
        gzip: o.compression == Compression::Gzip,
        timeout: Some(duration_to_wire(o.timeout)),
        ca_file: path(&o.tls.ca),
        client_certificate_file: path(&cert),
        client_key_file: path(&key),
    }
}

fn otlp_from_wire(o: api::OtlpExport) -> Result<OtlpConfig, String> {
    let duration = |d: Option<prost_types::Duration>, default: Duration, what: &str| match d {
        None => Ok(default),
        Some(d) => duration_from_wire(&d).ok_or_else(|| format!("the OTLP {what} is negative")),
    };
    let path = |p: String| (!p.is_empty()).then(|| PathBuf::from(p));
    let client = match (path(o.client_certificate_file), path(o.client_key_file)) {
        (Some(cert), Some(key)) => Some((cert, key)),
        (None, None) => None,
        _ => return Err("give both the client certificate and its key, or neither".into()),
    };
    let protocol = match api::OtlpProtocol::try_from(o.protocol) {
        Ok(api::OtlpProtocol::Grpc) => Protocol::Grpc,
        Ok(api::OtlpProtocol::HttpProtobuf) => Protocol::HttpProtobuf,
        Err(_) => return Err(format!("unknown OTLP protocol (enum value {})", o.protocol)),
    };
    let kv = |kvs: Vec<api::KeyValue>| kvs.into_iter().map(|p| (p.key, p.value)).collect();
    Ok(OtlpConfig {
        endpoint: o.endpoint.trim_end_matches('/').to_string(),
        protocol,
        headers: kv(o.headers),
        resource: kv(o.resource),
        interval: duration(o.interval, otlp::DEFAULT_INTERVAL, "interval")?,
        tls: TlsFiles {
            ca: path(o.ca_file),
            client,
        },
        compression: if o.gzip {
            Compression::Gzip
        } else {
            Compression::None
        },
        timeout: duration(o.timeout, otlp::DEFAULT_TIMEOUT, "timeout")?,
    })
}

/// `w` as it may be stored and shown: OTLP header values and an endpoint's `user:password@`
/// replaced (the header's name stays, to say which it was).
pub fn redacted(w: &api::WindowSpec) -> api::WindowSpec {
    let mut out = w.clone();
    if let Some(o) = &mut out.otlp {
        o.endpoint = audit::redact_userinfo(&o.endpoint);
        for h in &mut o.headers {
            h.value = audit::REDACTED.to_string();
        }
    }
    out
}

/// The secrets `w` carries (its OTLP header values), so that messages about it can be scrubbed.
pub fn secret_values(w: &api::WindowSpec) -> Vec<String> {
    audit::secret_values(&command_line(w), std::iter::empty())
}

/// `w` as the `recap window` options that ask for it, for people: the audit log, the history,
/// `recap window list`. Values as given (redact `w` first to store them).
pub fn command_line(w: &api::WindowSpec) -> Vec<String> {
    use api::window_spec::Target;
    let mut out: Vec<String> = Vec::new();
    let mut push = |option: &str, value: String| {
        out.push(option.to_string());
        out.push(value);
    };
    match &w.target {
        Some(Target::Cgroup(path)) => push("--cgroup", path.clone()),
        Some(Target::Pid(pid)) => push("--pid", pid.to_string()),
        Some(Target::Container(c)) => push("--container", c.clone()),
        Some(Target::Pod(p)) => {
            push("--pod", format!("{}/{}", p.namespace, p.name));
            if !p.container.is_empty() {
                push("--container", p.container.clone());
            }
            if !p.cri_endpoint.is_empty() {
                push("--cri-endpoint", p.cri_endpoint.clone());
            }
        }
        None => {}
    }
    if let Some(d) = w.duration.as_ref().and_then(duration_from_wire) {
        push("-d", format_duration(d));
    }
    if !w.families.is_empty() {
        let names: Vec<String> = w.families.iter().map(|f| family_name(*f)).collect();
        push("--probes", names.join(","));
    }
    for c in &w.capsules {
        let capsule = match tool_from_wire(c.tool) {
            Ok(tool) => CapsuleSpec {
                tool,
                args: c.args.clone(),
            }
            .to_string(),
            Err(_) => format!("#{}", c.tool),
        };
        push("--capsule", capsule);
    }
    if !w.artifacts.is_empty() {
        push("--artifacts", w.artifacts.clone());
    }
    if w.capsule_max_bytes != 0 {
        push("--capsule-max-size", w.capsule_max_bytes.to_string());
    }
    if w.grpc_paths != 0 {
        push("--grpc-paths", w.grpc_paths.to_string());
    }
    if let Some(o) = &w.otlp {
        push("--otlp-endpoint", o.endpoint.clone());
        if o.protocol == api::OtlpProtocol::HttpProtobuf as i32 {
            push("--otlp-protocol", "http/protobuf".into());
        }
        for h in &o.headers {
            push("--otlp-header", format!("{}={}", h.key, h.value));
        }
        for r in &o.resource {
            push("--otlp-resource", format!("{}={}", r.key, r.value));
        }
    }
    if w.target_only {
        out.push("--target-only".into());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_family_and_tool_has_its_value_on_the_wire_and_back() {
        for f in Family::ALL {
            let w = family_to_wire(f);
            assert_ne!(w, api::Family::Unspecified, "{f}");
            assert_eq!(family_from_wire(w as i32), Ok(f));
        }
        // And nothing on the wire that RECap does not have.
        for value in 1..64 {
            if api::Family::try_from(value).is_ok() {
                assert!(family_from_wire(value).is_ok(), "{value}");
            }
        }
        assert!(family_from_wire(0).is_err());
        assert!(family_from_wire(999).unwrap_err().contains("999"));
        for t in Tool::ALL {
            assert_eq!(tool_from_wire(tool_to_wire(t) as i32), Ok(t));
        }
        assert!(tool_from_wire(0).is_err());
        for s in [
            "open",
            "completed",
            "interrupted",
            "target_exited",
            "failed",
            "lost",
        ] {
            assert_eq!(status_name(status_to_wire(s) as i32), s);
        }
    }

    fn container(name: &str) -> api::WindowSpec {
        api::WindowSpec {
            target: Some(api::window_spec::Target::Container(name.into())),
            duration: Some(duration_to_wire(Duration::from_secs(5))),
            ..Default::default()
        }
    }

    #[test]
    fn a_request_is_the_window_the_cli_would_open_and_back() {
        let mut w = container("web");
        w.families = vec![api::Family::Tcp as i32, api::Family::Http as i32];
        w.capsules = vec![api::Capsule {
            tool: api::CapsuleTool::Tcpdump as i32,
            args: vec!["tcp".into(), "port".into(), "80".into()],
        }];
        w.otlp = Some(api::OtlpExport {
            endpoint: "http://collector:4317/".into(),
            headers: vec![api::KeyValue {
                key: "authorization".into(),
                value: "Bearer s3cret".into(),
            }],
            ..Default::default()
        });
        let r = from_wire(w.clone()).unwrap();
        assert!(!r.artifacts_given);
        assert_eq!(r.spec.families, vec![Family::TCP, Family::HTTP]);
        assert_eq!(r.spec.capsules.max_bytes, DEFAULT_CAPSULE_MAX_BYTES);
        assert_eq!(r.spec.grpc_paths, DEFAULT_GRPC_PATHS);
        let o = r.spec.export.otlp.as_ref().unwrap();
        assert_eq!(o.endpoint, "http://collector:4317");
        assert_eq!(
            (o.interval, o.timeout),
            (otlp::DEFAULT_INTERVAL, otlp::DEFAULT_TIMEOUT)
        );
        let back = to_wire(&r.spec);
        assert_eq!(from_wire(back).unwrap().spec, r.spec);
        let line = command_line(&redacted(&w));
        assert_eq!(
            line[..8],
            [
                "--container",
                "web",
                "-d",
                "5s",
                "--probes",
                "tcp,http",
                "--capsule",
                "tcpdump=tcp port 80"
            ]
        );
        assert!(
            line.contains(&"authorization=<redacted>".to_string()),
            "{line:?}"
        );
        assert!(!line.join(" ").contains("s3cret"));
        assert!(secret_values(&w).iter().any(|s| s == "Bearer s3cret"));
        // The defaults are the agent's to fill.
        assert!(to_wire(&r.spec).artifacts.is_empty());
    }

    #[test]
    fn hostile_requests_are_refused_with_the_reason() {
        let refused = |edit: &dyn Fn(&mut api::WindowSpec)| {
            let mut w = container("web");
            edit(&mut w);
            from_wire(w).unwrap_err()
        };
        assert!(refused(&|w| w.target = None).contains("give a target"));
        assert!(refused(&|w| w.duration = None).contains("duration"));
        assert!(refused(&|w| w.duration = Some(prost_types::Duration {
            seconds: -5,
            nanos: 0
        }))
        .contains("not negative"));
        assert!(
            refused(&|w| w.duration = Some(duration_to_wire(Duration::ZERO)))
                .contains("more than 0")
        );
        assert!(
            refused(&|w| w.duration = Some(duration_to_wire(MAX_DURATION * 2))).contains("over")
        );
        assert!(refused(&|w| w.families = vec![999]).contains("unknown probe family"));
        assert!(refused(
            &|w| w.target = Some(api::window_spec::Target::Container("x".repeat(5000)))
        )
        .contains("at most 4096 bytes"));
        assert!(
            refused(&|w| w.target = Some(api::window_spec::Target::Container(" ".into())))
                .contains("empty name")
        );
        assert!(refused(&|w| w.capsules = vec![api::Capsule {
            tool: 2,
            args: vec!["busybox".into()]
        }])
        .contains("not `busybox`"));
        assert!(refused(&|w| w.capsules = vec![
            api::Capsule {
                tool: 1,
                args: vec![]
            };
            2
        ])
        .contains("once"));
        assert!(refused(&|w| w.capsules = vec![
            api::Capsule {
                tool: 1,
                args: vec![]
            };
            100
        ])
        .contains("at most"));
        assert!(refused(&|w| w.capsule_max_bytes = 10).contains("4KiB"));
        assert!(refused(&|w| w.capsule_max_bytes = u64::MAX).contains("at most"));
        assert!(refused(&|w| {
            w.capsules = vec![api::Capsule {
                tool: api::CapsuleTool::Tcpdump as i32,
                args: vec!["x".repeat(4000); 20],
            }]
        })
        .contains("together"));
        assert!(refused(&|w| w.grpc_paths = 5000).contains("1 to 1024"));
        assert!(refused(&|w| {
            w.target = Some(api::window_spec::Target::Pid(1));
            w.capsules = vec![api::Capsule {
                tool: 1,
                args: vec![],
            }];
        })
        .contains("capsules join a container"));
        assert!(refused(&|w| {
            w.otlp = Some(api::OtlpExport {
                endpoint: "http://c:4317".into(),
                headers: vec![api::KeyValue {
                    key: "x".into(),
                    value: "1\r\nX-Injected: yes".into(),
                }],
                ..Default::default()
            })
        })
        .contains("control characters"));
        assert!(refused(&|w| {
            w.otlp = Some(api::OtlpExport {
                endpoint: "ftp://c".into(),
                ..Default::default()
            })
        })
        .contains("http://HOST:PORT"));
        let with_query = refused(&|w| {
            w.otlp = Some(api::OtlpExport {
                endpoint: "http://u:s3cret@c:4317/?api_key=k3y".into(),
                ..Default::default()
            })
        });
        assert!(with_query.contains("no query"), "{with_query}");
        assert!(!with_query.contains("s3cret"), "{with_query}");
    }
}
