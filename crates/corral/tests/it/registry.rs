//! Push and pull against a real registry (Debian's docker-registry, the CNCF distribution
//! registry) on loopback, and interoperability with skopeo in both directions.

use std::fs;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::support::{eventually, Env};

/// A docker-registry process, on loopback or in a network namespace, optionally with basic
/// authentication; stopped and started again on the same data to play a registry that dies.
pub struct Registry {
    child: Option<Child>,
    pub addr: String,
    netns: Option<String>,
    dir: tempfile::TempDir,
}

/// `corral` / `s3cret`, bcrypt-hashed as docker-registry's htpasswd wants.
pub const HTPASSWD: &str = "corral:$2b$05$Qd9FsIsoVBG.S9oqRmwXmuAxgOcMv/DAxAKhyE0cHVFmF.nhI3tQS\n";

impl Registry {
    fn start() -> Registry {
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        Registry::start_at(None, &format!("127.0.0.1:{port}"), false)
    }

    /// A registry listening on `addr` (inside `netns` when given), with basic auth when `auth`.
    pub fn start_at(netns: Option<&str>, addr: &str, auth: bool) -> Registry {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("config.yml");
        let mut yaml = format!(
            "version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: {addr}\n",
            dir.path().join("data").display()
        );
        if auth {
            fs::write(dir.path().join("htpasswd"), HTPASSWD).unwrap();
            yaml.push_str(&format!(
                "auth:\n  htpasswd:\n    realm: corral-test\n    path: {}\n",
                dir.path().join("htpasswd").display()
            ));
        }
        fs::write(&config, yaml).unwrap();
        let mut reg = Registry { child: None, addr: addr.to_string(), netns: netns.map(String::from), dir };
        reg.resume();
        reg
    }

    /// Stops it (as a crash would: SIGKILL).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts it again on the same data and address.
    pub fn resume(&mut self) {
        let mut cmd = match &self.netns {
            Some(ns) => {
                let mut c = Command::new("nsenter");
                c.arg(format!("--net=/run/netns/{ns}")).arg("docker-registry");
                c
            }
            None => Command::new("docker-registry"),
        };
        let log = fs::OpenOptions::new().create(true).append(true).open(self.dir.path().join("access.log")).unwrap();
        let child = cmd
            .arg("serve")
            .arg(self.dir.path().join("config.yml"))
            .stdout(log)
            .stderr(Stdio::null())
            .spawn()
            .expect("docker-registry is installed (scripts/deps.sh)");
        self.child = Some(child);
        eventually("the registry answers /v2/", Duration::from_secs(20), || {
            matches!(self.get_status("/v2/"), Some(200 | 401))
        });
    }

    /// Its access log: `IP - USER [date] "GET /v2/... HTTP/1.1" STATUS ...` lines.
    pub fn access_log(&self) -> String {
        fs::read_to_string(self.dir.path().join("access.log")).unwrap_or_default()
    }

    fn get_status(&self, path: &str) -> Option<u16> {
        let mut s = TcpStream::connect(&self.addr).ok()?;
        write!(s, "GET {path} HTTP/1.0\r\nHost: {}\r\n\r\n", self.addr).ok()?;
        let mut resp = String::new();
        s.read_to_string(&mut resp).ok()?;
        resp.split_whitespace().nth(1)?.parse().ok()
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        self.stop();
    }
}

#[test]
fn push_and_pull_through_a_real_registry_and_skopeo() {
    crate::support::needs_root!();
    let reg = Registry::start();
    let env = Env::new();
    let ctx = tempfile::tempdir().unwrap();
    fs::write(ctx.path().join("Containerfile"), "FROM busybox\nRUN echo pushed > /msg\nCMD [\"cat\", \"/msg\"]\n")
        .unwrap();
    // A layer above the chunk size, to go up in several PATCH requests.
    let big = tempfile::tempdir().unwrap();
    let data: Vec<u8> = (0..20_000_000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
    fs::write(big.path().join("data.bin"), &data).unwrap();
    env.ok(&["build", "-t", "app:v1", ctx.path().to_str().unwrap()]);
    env.ok(&["image", "import", big.path().to_str().unwrap(), "big:v1"]);

    let dest = format!("{}/team/app:v1", reg.addr);
    let out = env.cmd(&["push", "--insecure", "app:v1", &dest]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(!String::from_utf8_lossy(&out.stderr).contains("already there"));
    // Again: every blob is already there (HEAD checks), nothing is uploaded.
    let out = env.cmd(&["push", "--insecure", "app:v1", &dest]).output().unwrap();
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && log.matches("already there").count() == 3 && !log.contains("done"), "{log}");
    let big_dest = format!("{}/big:v1", reg.addr);
    env.ok(&["push", "--insecure", "big:v1", &big_dest]);

    // Pull into a fresh store and run; first past an image size limit, as declared (nothing is
    // downloaded) and as unpacked (what was unpacked goes again).
    let other = Env::new();
    let layers = || -> Vec<_> {
        fs::read_dir(other.root.path().join("layers/sha256"))
            .map_or(Vec::new(), |d| d.map(|e| e.unwrap().path()).collect())
    };
    let limited = |limit: &str| {
        let out = other.cmd(&["pull", "--insecure", &big_dest]).env("CORRAL_MAX_IMAGE_SIZE", limit).output().unwrap();
        assert_eq!(out.status.code(), Some(125));
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let before = layers();
    let err = limited("1m");
    assert!(err.contains("image big") && err.contains("past the limit of 1 MiB (CORRAL_MAX_IMAGE_SIZE)"), "{err}");
    assert_eq!(layers(), before, "nothing was downloaded");
    // Zeros: a few KiB as declared, 8 MiB unpacked.
    let zeros = tempfile::tempdir().unwrap();
    fs::write(zeros.path().join("zeros"), vec![0u8; 8 << 20]).unwrap();
    env.ok(&["image", "import", zeros.path().to_str().unwrap(), "zeros:v1"]);
    let zeros_dest = format!("{}/zeros:v1", reg.addr);
    env.ok(&["push", "--insecure", "zeros:v1", &zeros_dest]);
    let out = other.cmd(&["pull", "--insecure", &zeros_dest]).env("CORRAL_MAX_IMAGE_SIZE", "1m").output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("image zeros: its layers unpack to more than 1 MiB"), "{err}");
    assert_eq!(layers(), before, "the refused image's layers go again");
    let listed = other.ok(&["image", "ls"]);
    assert!(!listed.contains("big") && !listed.contains("zeros"), "{listed}");
    other.ok(&["pull", "--insecure", &zeros_dest]);
    other.ok(&["pull", "--insecure", &dest]);
    assert_eq!(other.ok(&["run", "--image", &dest]), "pushed\n");
    other.ok(&["pull", "--insecure", &big_dest]);
    let pulled: Vec<_> = fs::read_dir(other.root.path().join("layers/sha256"))
        .unwrap()
        .map(|e| e.unwrap().path().join("data.bin"))
        .filter(|p| p.exists())
        .collect();
    assert_eq!(pulled.len(), 1);
    assert!(fs::read(&pulled[0]).unwrap() == data, "the big layer arrived intact");
    let err = other.fails(&["pull", "--insecure", &format!("{}/team/nope:v1", reg.addr)], 125);
    assert!(err.contains("no such image in the registry"), "{err}");

    // skopeo reads what corral pushed, and corral pulls what skopeo pushed.
    let work = tempfile::tempdir().unwrap();
    let layout = work.path().join("layout");
    let st = Command::new("skopeo")
        .args(["copy", "--src-tls-verify=false"])
        .arg(format!("docker://{dest}"))
        .arg(format!("oci:{}:v1", layout.display()))
        .output()
        .unwrap();
    assert!(st.status.success(), "skopeo copy from the registry: {}", String::from_utf8_lossy(&st.stderr));
    let st = Command::new("skopeo")
        .args(["copy", "--dest-tls-verify=false"])
        .arg(format!("oci:{}:v1", layout.display()))
        .arg(format!("docker://{}/via/skopeo:v2", reg.addr))
        .output()
        .unwrap();
    assert!(st.status.success(), "skopeo copy to the registry: {}", String::from_utf8_lossy(&st.stderr));
    let via = format!("{}/via/skopeo:v2", reg.addr);
    other.ok(&["pull", "--insecure", &via]);
    assert_eq!(other.ok(&["run", "--image", &via]), "pushed\n");
}

#[test]
fn images_are_pulled_on_demand_by_run_and_by_agents() {
    crate::support::needs_root!();
    let reg = Registry::start();
    let env = Env::new();
    let ctx = tempfile::tempdir().unwrap();
    fs::write(ctx.path().join("Containerfile"), "FROM busybox\nRUN echo pulled > /msg\nCMD [\"cat\", \"/msg\"]\n")
        .unwrap();
    env.ok(&["build", "-t", "app:v1", ctx.path().to_str().unwrap()]);
    let dest = format!("{}/team/app:v1", reg.addr);
    env.ok(&["push", "--insecure", "app:v1", &dest]);

    // `corral run` of an image its store lacks pulls it (a loopback registry is plain HTTP).
    let fresh = Env::new();
    assert_eq!(fresh.ok(&["run", "--image", &dest]), "pulled\n");
    // With --pull never it says why not; with always it pulls again.
    let other = Env::new();
    let out = other.corral(&["run", "--pull", "never", "--image", &dest]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("pull policy is never"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(fresh.ok(&["run", "--pull", "always", "--image", &dest]), "pulled\n");
    let out = other.corral(&["run", "--image", "127.0.0.1:1/team/app:v1"]);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("pulling 127.0.0.1:1/team/app:v1"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // An agent whose store lacks it pulls it for the tasks that need it.
    let mut c = crate::cluster::Cluster::new("5");
    c.start_agent("a1", "cpus:4;mem:4096");
    let req = corral_cluster::wire::RunTasks {
        role: "*".into(),
        name: Some("pulled".into()),
        count: 3,
        cpus: 0.1,
        mem: 32.0,
        disk: 0.0,
        image: Some(dest.clone()),
        pull: Default::default(),
        command: vec!["cat".into(), "/msg".into()],
    };
    let ids = crate::cluster::client(&c).run_tasks(&req).unwrap();
    eventually("the three tasks finish", Duration::from_secs(120), || {
        ids.iter().all(|id| crate::cluster::client(&c).task(id).unwrap().state.as_str() == "FINISHED")
    });
    for id in &ids {
        assert_eq!(c.ok(&["task", "logs", id]), "pulled\n");
    }
}
