//! Property-based fuzzing of every parser that takes untrusted input: the Containerfile parser,
//! the resource grammar, attributes and constraints, image references, Marathon's app JSON, the
//! tar unpacker and the registry's `WWW-Authenticate` parser. Each property says what the output
//! must be (a round trip, an error naming the input or its line, nothing written outside the
//! root), not only that nothing panics.
//!
//! Bounded: `CORRAL_FUZZ_CASES` cases each (default 256; CI sets more). A failing case is shrunk
//! and saved by proptest under `proptest-regressions/`, and then becomes a regression test by
//! being committed there.

use proptest::prelude::*;

fn cases(scale: u32) -> ProptestConfig {
    let n = std::env::var("CORRAL_FUZZ_CASES").ok().and_then(|v| v.parse::<u32>().ok()).unwrap_or(256);
    ProptestConfig { cases: (n / scale).max(16), ..ProptestConfig::default() }
}

/// Text that looks like the input it is aimed at: words from `vocabulary` and separators mixed
/// with arbitrary characters.
fn near(vocabulary: &'static [&'static str], separators: &'static [&'static str]) -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        4 => proptest::sample::select(vocabulary).prop_map(str::to_string),
        3 => proptest::sample::select(separators).prop_map(str::to_string),
        1 => "\\PC{0,6}",
        1 => "[0-9.eE+-]{1,8}",
    ];
    proptest::collection::vec(piece, 0..24).prop_map(|p| p.concat())
}

const CONTAINERFILE_WORDS: &[&str] = &[
    "FROM",
    "RUN",
    "COPY",
    "ADD",
    "ENV",
    "ARG",
    "WORKDIR",
    "USER",
    "CMD",
    "ENTRYPOINT",
    "EXPOSE",
    "LABEL",
    "AS",
    "--from=",
    "--chown=",
    "--chmod=",
    "busybox",
    "scratch",
    "$X",
    "${X:-d}",
    "[\"sh\",\"-c\"]",
    "a=b",
    "/app",
    "# comment",
    "# syntax=x",
    "\\",
    "\"",
    "'",
];

proptest! {
    #![proptest_config(cases(1))]

    #[test]
    fn containerfiles_parse_or_name_the_line(text in prop_oneof![near(CONTAINERFILE_WORDS, &[" ", "\n", " \\\n", "\t"]), "\\PC{0,200}"]) {
        use corral_build::containerfile::{expand, parse};
        let lines = text.split('\n').count().max(1);
        match parse(&text) {
            Ok(file) => {
                let mut last = 0;
                for stage in &file.stages {
                    prop_assert!(stage.line > last && stage.line <= lines, "stage at line {} of {lines}", stage.line);
                    prop_assert!(!stage.base.is_empty());
                    last = stage.line;
                    for step in &stage.steps {
                        prop_assert!(step.line > last && step.line <= lines, "step at line {} of {lines}", step.line);
                        prop_assert!(!step.text.trim().is_empty());
                        last = step.line;
                    }
                }
            }
            Err(e) => {
                prop_assert!(e.line >= 1 && e.line <= lines + 1, "error at line {} of {lines}", e.line);
                prop_assert!(!e.message.is_empty());
                let prefix = format!("line {}: ", e.line);
                prop_assert!(e.to_string().starts_with(&prefix), "{}", e);
            }
        }
        // Expansion: text without `$` or `\` is itself.
        match expand(&text, &|_| Some("v".into())) {
            Ok(out) if !text.contains('$') && !text.contains('\\') => prop_assert_eq!(out, text),
            Ok(_) => {}
            Err(e) => prop_assert!(!e.0.is_empty()),
        }
    }

    #[test]
    fn resources_round_trip_or_name_the_input(text in prop_oneof![
        near(&["cpus", "mem", "disk", "ports", "gpus", "(web)", "(*)", "[31000-32000]", "[1-2,5-9]", "{a,b}", "1e300", "-1", "NaN", "inf"], &[":", ";", ",", " "]),
        "\\PC{0,60}",
    ]) {
        use corral_alloc::Resources;
        match Resources::parse(&text) {
            Ok(r) => {
                let again = Resources::parse(&r.to_string());
                prop_assert_eq!(again.as_ref(), Ok(&r), "{} does not parse back", r);
                for (name, _, _) in r.iter() {
                    prop_assert!(!name.is_empty());
                }
            }
            Err(e) => {
                prop_assert_eq!(&e.input, &text);
                prop_assert!(!e.reason.is_empty());
            }
        }
    }

    #[test]
    fn attributes_round_trip_or_name_the_input(text in prop_oneof![
        near(&["rack", "zone", "a", "eu", "8", "cores", "_x.y-z"], &[":", ";", " ", "::"]),
        "\\PC{0,60}",
    ]) {
        match corral_alloc::attributes::parse(&text) {
            Ok(attrs) => {
                for (k, v) in &attrs {
                    prop_assert!(!k.is_empty() && !v.is_empty() && !v.contains(char::is_whitespace));
                }
                let rendered: Vec<String> = attrs.iter().map(|(k, v)| format!("{k}:{v}")).collect();
                prop_assert_eq!(corral_alloc::attributes::parse(&rendered.join(";")), Ok(attrs));
            }
            Err(e) => {
                prop_assert_eq!(&e.input, &text);
                prop_assert!(!e.reason.is_empty());
            }
        }
    }

    #[test]
    fn constraints_parse_as_written_or_name_the_input(parts in proptest::collection::vec(prop_oneof![
        proptest::sample::select(&["hostname", "rack", "UNIQUE", "CLUSTER", "GROUP_BY", "LIKE", "UNLIKE", "MAX_PER", "IS", "3", "0", "-1", "a.*", "(", "[", ""][..]).prop_map(str::to_string),
        "\\PC{0,8}",
    ], 0..5)) {
        use corral_services::constraints::{Constraint, Operator};
        match Constraint::parse(&parts) {
            Ok(c) => {
                prop_assert!(parts.len() == 2 || parts.len() == 3);
                prop_assert_eq!(&c.field, &parts[0]);
                let name = match c.op {
                    Operator::Unique => "UNIQUE",
                    Operator::Cluster(_) => "CLUSTER",
                    Operator::GroupBy(_) => "GROUP_BY",
                    Operator::Like(_) => "LIKE",
                    Operator::Unlike(_) => "UNLIKE",
                    Operator::MaxPer(n) => {
                        prop_assert!(n > 0);
                        "MAX_PER"
                    }
                    Operator::Is(_) => "IS",
                };
                prop_assert_eq!(name, parts[1].as_str());
            }
            Err(e) => {
                prop_assert_eq!(e.input, parts.join(":"));
                prop_assert!(!e.reason.is_empty());
            }
        }
    }

    #[test]
    fn image_references_round_trip(text in prop_oneof![
        near(&["busybox", "library/", "docker.io/", "localhost:5000/", "10.0.0.5:5000/", "team/app", ":v1", ":latest", "@sha256:", "0123456789abcdef", "UPPER", "..", "--", "__"], &["/", ":", "@", "."]),
        "\\PC{0,80}",
    ]) {
        use corral_image::Reference;
        match text.parse::<Reference>() {
            Ok(r) => {
                let again: Result<Reference, _> = r.to_string().parse();
                prop_assert_eq!(again.as_ref().ok(), Some(&r), "{} does not parse back", r);
                prop_assert!(!r.name().is_empty());
                // A registry host may have capitals; a repository's path may not.
                let repository = r.name().rsplit('/').next().unwrap_or_default();
                prop_assert!(repository.chars().all(|c| !c.is_ascii_uppercase()), "{} has capitals", r.name());
            }
            Err(e) => prop_assert!(!e.to_string().is_empty()),
        }
    }

    #[test]
    fn marathon_apps_are_valid_or_refused_naming_their_fields(app in arb_app()) {
        use corral_services::app::{App, MAX_ID_LEN, MAX_INSTANCES};
        use corral_services::wire::AppDefinition;
        let body = serde_json::to_vec(&app).unwrap();
        // The legacy `ports` is read as `portDefinitions`: its errors may be reported there.
        let mut keys: Vec<&str> = app.as_object().unwrap().keys().map(String::as_str).collect();
        if keys.contains(&"ports") {
            keys.push("portDefinitions");
        }
        let definition = match AppDefinition::decode(&body, false) {
            Ok(d) => d,
            Err(e) => {
                prop_assert!(!e.message.is_empty());
                prop_assert!(e.path == "/" || keys.iter().any(|k| e.path.starts_with(&format!("/{k}"))), "{} names no field", e.path);
                return Ok(());
            }
        };
        let mut d = definition.normalized();
        d.version = Some("2026-01-01T00:00:00.000Z".into());
        match App::from_definition(&d) {
            Ok(a) => {
                prop_assert!(a.id.to_string().len() <= MAX_ID_LEN + 1);
                prop_assert!(a.cpus.is_finite() && a.cpus >= 0.0 && a.cpus <= corral_alloc::resources::MAX_TASK_CPUS);
                prop_assert!(a.mem.is_finite() && a.mem >= 0.0 && a.mem <= corral_alloc::resources::MAX_TASK_MEM_MIB);
                prop_assert!(a.disk.is_finite() && a.disk >= 0.0 && a.disk <= corral_alloc::resources::MAX_TASK_DISK_MIB);
                prop_assert!(i64::from(a.instances) <= MAX_INSTANCES);
                prop_assert!(a.backoff_factor.is_finite() && a.backoff_factor <= 100.0);
                prop_assert!(a.max_launch_delay_ms <= 7 * 86_400_000);
            }
            Err(invalid) => {
                prop_assert!(!invalid.0.is_empty());
                for v in &invalid.0 {
                    prop_assert!(!v.errors.is_empty() && v.errors.iter().all(|e| !e.is_empty()));
                    prop_assert!(
                        v.path == "/" || keys.iter().any(|k| v.path.starts_with(&format!("/{k}"))),
                        "{} names no field of {:?}", v.path, keys
                    );
                }
            }
        }
    }

    #[test]
    fn www_authenticate_challenges_parse_as_sent(
        realm in "https?://[a-z0-9.:/-]{1,30}",
        service in proptest::option::of("[A-Za-z0-9.:-]{1,20}"),
        scope in proptest::option::of("repository:[a-z0-9/]{1,12}:(pull|push|pull,push)"),
        scheme in proptest::sample::select(&["Bearer", "bearer", "BEARER"][..]),
        spaces in " {0,2}",
    ) {
        use corral_registry::auth::{parse_challenge, Challenge};
        let mut params = vec![format!("realm=\"{realm}\"")];
        params.extend(service.iter().map(|s| format!("service=\"{s}\"")));
        params.extend(scope.iter().map(|s| format!("scope=\"{s}\"")));
        let header = format!("{scheme} {}", params.join(&format!(",{spaces}")));
        prop_assert_eq!(parse_challenge(&header), Some(Challenge::Bearer { realm, service, scope }), "{}", header);
    }

    #[test]
    fn any_www_authenticate_header_is_a_known_scheme_or_nothing(header in prop_oneof![
        near(&["Bearer", "Basic", "realm", "service", "scope", "=", "\"", "\\\"", "https://r/token"], &[" ", ",", "="]),
        "\\PC{0,120}",
    ]) {
        use corral_registry::auth::{parse_challenge, Challenge};
        let scheme = header.trim().split(' ').next().unwrap_or("").to_ascii_lowercase();
        match parse_challenge(&header) {
            Some(Challenge::Basic) => prop_assert_eq!(scheme, "basic"),
            Some(Challenge::Bearer { realm, .. }) => {
                prop_assert_eq!(scheme, "bearer");
                prop_assert!(!realm.is_empty());
            }
            None => prop_assert!(scheme != "basic"),
        }
    }
}

proptest! {
    // Each case unpacks into a fresh directory: fewer of them.
    #![proptest_config(cases(8))]

    #[test]
    fn a_damaged_layer_never_writes_outside_its_root(
        flips in proptest::collection::vec((0usize..4096, any::<u8>()), 0..24),
        cut in proptest::option::of(0usize..4096),
    ) {
        let mut archive = sample_layer();
        for (at, byte) in flips {
            let at = at % archive.len();
            archive[at] = byte;
        }
        if let Some(cut) = cut {
            archive.truncate(cut % archive.len());
        }
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("root");
        std::fs::create_dir(&root).unwrap();
        let limits = corral_image::layer::Limits { max_bytes: 1 << 20, max_entries: 100 };
        match corral_image::layer::unpack_within(&archive[..], &root, limits) {
            Ok(stats) => prop_assert!(stats.entries <= 100 && stats.bytes <= 1 << 20),
            Err(e) => prop_assert!(!e.to_string().is_empty()),
        }
        let beside: Vec<_> = std::fs::read_dir(tmp.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        prop_assert_eq!(beside, vec![std::ffi::OsString::from("root")]);
    }
}

/// A small layer with a directory, files, a symlink and a hardlink.
fn sample_layer() -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    let mut add = |path: &str, kind: tar::EntryType, data: &[u8], link: Option<&str>| {
        let mut h = tar::Header::new_ustar();
        h.set_entry_type(kind);
        h.set_size(data.len() as u64);
        h.set_mode(if kind == tar::EntryType::Directory { 0o755 } else { 0o644 });
        if let Some(l) = link {
            h.set_link_name(l).unwrap();
        }
        b.append_data(&mut h, path, data).unwrap();
    };
    add("etc/", tar::EntryType::Directory, b"", None);
    add("etc/hostname", tar::EntryType::Regular, b"box\n", None);
    add("etc/link", tar::EntryType::Symlink, b"", Some("hostname"));
    add("etc/hard", tar::EntryType::Link, b"", Some("etc/hostname"));
    add("bin/tool", tar::EntryType::Regular, &[7u8; 700], None);
    b.into_inner().unwrap()
}

/// Marathon app definitions: the fields it knows (and a few it does not) with values of any
/// JSON type, the extremes included.
fn arb_app() -> impl Strategy<Value = serde_json::Value> {
    use serde_json::{json, Value};
    let number = prop_oneof![
        Just(json!(0)),
        Just(json!(-1)),
        Just(json!(1e300)),
        Just(json!(-1e300)),
        Just(json!(u64::MAX)),
        (-1000.0f64..100_000.0).prop_map(|f| json!(f)),
        (0u32..20).prop_map(|n| json!(n)),
    ];
    let leaf = prop_oneof![
        number,
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        "\\PC{0,12}".prop_map(Value::String),
        proptest::sample::select(
            &["/web", "web", "a/../b", "/Web", "busybox", "TCP", "HTTP", "UNIQUE", "0", "root"][..]
        )
        .prop_map(|s| Value::String(s.to_string())),
    ];
    let value = leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            proptest::collection::btree_map(
                proptest::sample::select(
                    &["image", "type", "docker", "name", "protocol", "port", "path", "value", "mode", "forcePullImage"]
                        [..]
                )
                .prop_map(str::to_string),
                inner,
                0..4
            )
            .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    });
    let fields = &[
        "cmd",
        "args",
        "cpus",
        "mem",
        "disk",
        "instances",
        "user",
        "env",
        "constraints",
        "container",
        "healthChecks",
        "readinessChecks",
        "portDefinitions",
        "ports",
        "requirePorts",
        "upgradeStrategy",
        "backoffSeconds",
        "backoffFactor",
        "maxLaunchDelaySeconds",
        "taskKillGracePeriodSeconds",
        "dependencies",
        "labels",
        "fetch",
        "uris",
        "networks",
        "role",
        "acceptedResourceRoles",
        "killSelection",
        "unreachableStrategy",
        "gpus",
        "secrets",
        "noSuchField",
    ][..];
    (
        prop_oneof![
            "/?[a-z0-9-]{1,12}(/[a-z0-9-]{1,12}){0,2}".prop_map(serde_json::Value::String),
            "\\PC{0,250}".prop_map(serde_json::Value::String),
        ],
        proptest::collection::btree_map(proptest::sample::select(fields).prop_map(str::to_string), value, 0..6),
    )
        .prop_map(|(id, rest)| {
            let mut app = serde_json::Map::new();
            app.insert("id".into(), id);
            app.extend(rest);
            serde_json::Value::Object(app)
        })
}
