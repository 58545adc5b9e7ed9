//! `TempPostgres`: a throwaway PostgreSQL 15 server for tests, never a mock.
//!
//! It lives in a temporary directory, listens on a free port of 127.0.0.1 (and
//! a unix socket inside its directory), runs with `fsync=off`, and is stopped
//! (`pg_ctl stop -m immediate`) and removed on drop. PostgreSQL refuses to run
//! as root, so when the tests run as root the server runs as the `postgres`
//! user (`runuser`), in a directory handed to that user. A watcher process
//! stops the server and removes the directory if the test process ends without
//! dropping it (a panic in a static, a kill), so no server outlives its tests.

use std::io;
use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};

/// Where Debian's `postgresql-15` package puts the server binaries.
pub const DEFAULT_BIN_DIR: &str = "/usr/lib/postgresql/15/bin";
/// Overrides [`DEFAULT_BIN_DIR`] (another install, another version).
pub const BIN_DIR_VARIABLE: &str = "LILA_TEST_PG_BIN";

/// Why a throwaway server could not be had.
#[derive(Debug, thiserror::Error)]
pub enum TempPostgresError {
    #[error(
        "PostgreSQL is not installed ({0} is missing): apt-get install postgresql (or set LILA_TEST_PG_BIN)"
    )]
    NotInstalled(PathBuf),
    #[error(
        "tests run as root, and PostgreSQL refuses root: there is no `postgres` user to run it as"
    )]
    NoPostgresUser,
    #[error("could not run {program}")]
    Spawn {
        program: String,
        #[source]
        source: io::Error,
    },
    #[error("{program} failed: {output}")]
    Failed { program: String, output: String },
    #[error("could not prepare the server's directory")]
    Io(#[from] io::Error),
}

/// What a server started by [`TempPostgres::start_with`] has beyond the
/// defaults ([`TempPostgres::start`]: no TLS, initdb's pg_hba.conf, which
/// trusts everyone).
#[derive(Debug, Clone, Default)]
pub struct ServerOptions {
    /// `ssl=on`, with a certificate for the DNS name `localhost` only (no IP
    /// address) signed by a throwaway CA: [`TempPostgres::ca_file`].
    pub tls: bool,
    /// The whole of pg_hba.conf, instead of initdb's.
    pub hba: Option<String>,
}

/// A running throwaway server. Dropping it stops the server and deletes its
/// files.
pub struct TempPostgres {
    dir: Option<tempfile::TempDir>,
    bin_dir: PathBuf,
    port: u16,
    /// The CA that signed the server's certificate, when it has TLS.
    ca_file: Option<PathBuf>,
    /// Run the binaries as the `postgres` user (the tests run as root).
    as_postgres: bool,
    watcher: Option<Child>,
    databases: AtomicU32,
}

impl std::fmt::Debug for TempPostgres {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TempPostgres")
            .field("port", &self.port)
            .field("dir", &self.dir.as_ref().map(|dir| dir.path()))
            .finish_non_exhaustive()
    }
}

/// How many ports to try when another process takes the free one first.
const PORT_ATTEMPTS: usize = 3;

impl TempPostgres {
    /// Starts a fresh server (initdb + pg_ctl start; about a second).
    pub fn start() -> Result<Self, TempPostgresError> {
        Self::start_with(&ServerOptions::default())
    }

    /// Starts a fresh server with `options` (TLS adds the certificates'
    /// making, a few tens of milliseconds).
    pub fn start_with(options: &ServerOptions) -> Result<Self, TempPostgresError> {
        let bin_dir = std::env::var_os(BIN_DIR_VARIABLE)
            .map_or_else(|| PathBuf::from(DEFAULT_BIN_DIR), PathBuf::from);
        for binary in ["initdb", "pg_ctl", "createdb"] {
            let path = bin_dir.join(binary);
            if !path.is_file() {
                return Err(TempPostgresError::NotInstalled(path));
            }
        }
        let as_postgres = current_user_is_root()?;
        let dir = tempfile::Builder::new().prefix("lila-pg-").tempdir()?;
        if as_postgres {
            let (uid, gid) = postgres_user_ids()?;
            std::os::unix::fs::chown(dir.path(), Some(uid), Some(gid))?;
        }
        let mut server = TempPostgres {
            dir: Some(dir),
            bin_dir,
            port: 0,
            ca_file: None,
            as_postgres,
            watcher: None,
            databases: AtomicU32::new(0),
        };
        server.run(
            "initdb",
            &[
                "-D",
                &server.data_dir_text(),
                "-U",
                "postgres",
                "-A",
                "trust",
                "-E",
                "UTF8",
                "--locale=C",
                "--no-sync",
            ],
        )?;
        server.watcher = Some(server.spawn_watcher()?);
        if let Some(hba) = &options.hba {
            // initdb's file, rewritten in place: it stays the server user's.
            std::fs::write(server.dir().join("data").join("pg_hba.conf"), hba)?;
        }
        if options.tls {
            server.ca_file = Some(server.make_certificates()?);
        }
        let mut last_error = None;
        for _ in 0..PORT_ATTEMPTS {
            server.port = free_port()?;
            match server.start_server() {
                Ok(()) => return Ok(server),
                Err(e) => last_error = Some(e),
            }
        }
        Err(last_error.unwrap_or(TempPostgresError::Failed {
            program: "pg_ctl start".into(),
            output: "no attempt was made".into(),
        }))
    }

    /// One server shared by every test of the process, started on first use.
    /// Tests share it by using distinct phones or [`Self::create_database`].
    /// Its watcher removes it when the process ends.
    pub fn shared() -> Result<&'static TempPostgres, String> {
        static SHARED: OnceLock<Result<TempPostgres, String>> = OnceLock::new();
        SHARED
            .get_or_init(|| TempPostgres::start().map_err(|e| error_chain(&e)))
            .as_ref()
            .map_err(Clone::clone)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The PEM file of the CA that signed the server's certificate (for
    /// `sslrootcert`), when the server was started with TLS.
    pub fn ca_file(&self) -> Option<&Path> {
        self.ca_file.as_deref()
    }

    /// The URL of the `postgres` database, as `LILA_DATABASE_URL` takes it.
    pub fn database_url(&self) -> String {
        self.url_of("postgres")
    }

    /// The URL of database `name` on this server.
    pub fn url_of(&self, name: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{name}", self.port)
    }

    /// Creates a new empty database and returns its URL: a clean slate per
    /// test on a shared server.
    pub fn create_database(&self) -> Result<String, TempPostgresError> {
        let number = self.databases.fetch_add(1, Ordering::Relaxed);
        let name = format!("test_{number}");
        let port = self.port.to_string();
        self.run(
            "createdb",
            &["-h", "127.0.0.1", "-p", &port, "-U", "postgres", &name],
        )?;
        Ok(self.url_of(&name))
    }

    /// The server's directory (data, socket, log); gone after drop.
    pub fn dir(&self) -> &Path {
        self.dir
            .as_ref()
            .map_or(Path::new("/nonexistent"), |dir| dir.path())
    }

    fn data_dir_text(&self) -> String {
        self.dir().join("data").display().to_string()
    }

    /// A CA, and a certificate for `localhost` it signs, in `tls/` (the
    /// server's key the server user's own, mode 0600, as PostgreSQL demands).
    /// Returns the CA's certificate.
    fn make_certificates(&self) -> Result<PathBuf, TempPostgresError> {
        let tls = self.dir().join("tls");
        std::fs::create_dir(&tls)?;
        let ca = throwaway_ca(&tls, "ca")?;
        let (certificate, key) = (tls.join("server.crt"), tls.join("server.key"));
        let text = |path: &Path| path.display().to_string();
        openssl_req(
            &[],
            "/CN=localhost",
            &tls.join("ca.cnf"),
            &key,
            &tls.join("server.csr"),
        )?;
        let extensions = tls.join("server.ext");
        std::fs::write(
            &extensions,
            "basicConstraints = critical, CA:FALSE\n\
             keyUsage = critical, digitalSignature, keyEncipherment\n\
             extendedKeyUsage = serverAuth\n\
             subjectAltName = DNS:localhost\n",
        )?;
        openssl(&[
            "x509",
            "-req",
            "-in",
            &text(&tls.join("server.csr")),
            "-CA",
            &text(&ca),
            "-CAkey",
            &text(&tls.join("ca.key")),
            "-set_serial",
            "2",
            "-days",
            "2",
            "-extfile",
            &text(&extensions),
            "-out",
            &text(&certificate),
        ])?;
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600))?;
        if self.as_postgres {
            let (uid, gid) = postgres_user_ids()?;
            for file in [&tls, &certificate, &key] {
                std::os::unix::fs::chown(file, Some(uid), Some(gid))?;
            }
        }
        Ok(ca)
    }

    fn start_server(&self) -> Result<(), TempPostgresError> {
        let mut options = format!(
            "-c listen_addresses=127.0.0.1 -c port={} -c unix_socket_directories='{}' \
             -c fsync=off -c synchronous_commit=off -c full_page_writes=off",
            self.port,
            self.dir().display()
        );
        if self.ca_file.is_some() {
            let tls = self.dir().join("tls");
            options.push_str(&format!(
                " -c ssl=on -c ssl_cert_file='{}' -c ssl_key_file='{}'",
                tls.join("server.crt").display(),
                tls.join("server.key").display()
            ));
        }
        let log = self.dir().join("server.log").display().to_string();
        self.run(
            "pg_ctl",
            &[
                "start",
                "-D",
                &self.data_dir_text(),
                "-l",
                &log,
                "-w",
                "-t",
                "30",
                "-o",
                &options,
            ],
        )
        .map_err(|e| match e {
            TempPostgresError::Failed { program, output } => {
                let log = std::fs::read_to_string(&log).unwrap_or_default();
                TempPostgresError::Failed {
                    program,
                    output: format!("{output}\nserver log:\n{log}"),
                }
            }
            other => other,
        })
    }

    /// The command running `binary` as the server's user.
    fn command(&self, binary: &str) -> Command {
        let path = self.bin_dir.join(binary);
        if self.as_postgres {
            let mut command = Command::new("runuser");
            command.args(["-u", "postgres", "--"]).arg(path);
            command
        } else {
            Command::new(path)
        }
    }

    /// Runs a binary to completion. Its output is captured (never inherited:
    /// the server must not keep the test's stdout open).
    fn run(&self, binary: &str, args: &[&str]) -> Result<(), TempPostgresError> {
        let output = self
            .command(binary)
            .args(args)
            .current_dir(self.dir())
            .stdin(Stdio::null())
            .output()
            .map_err(|source| TempPostgresError::Spawn {
                program: binary.to_owned(),
                source,
            })?;
        if output.status.success() {
            Ok(())
        } else {
            Err(TempPostgresError::Failed {
                program: binary.to_owned(),
                output: format!(
                    "{}{}",
                    String::from_utf8_lossy(&output.stdout),
                    String::from_utf8_lossy(&output.stderr)
                ),
            })
        }
    }

    /// A shell that waits for this process to end, then stops the server and
    /// removes its directory, in its own process group so a Ctrl-C of the
    /// tests does not take it down first.
    fn spawn_watcher(&self) -> Result<Child, TempPostgresError> {
        use std::os::unix::process::CommandExt;
        const SCRIPT: &str = r#"
            while kill -0 "$1" 2>/dev/null; do sleep 1; done
            if [ "$4" = yes ]; then
                runuser -u postgres -- "$2" stop -D "$3/data" -m immediate >/dev/null 2>&1
            else
                "$2" stop -D "$3/data" -m immediate >/dev/null 2>&1
            fi
            rm -rf "$3"
        "#;
        Command::new("sh")
            .arg("-c")
            .arg(SCRIPT)
            .arg("lila-pg-watcher")
            .arg(std::process::id().to_string())
            .arg(self.bin_dir.join("pg_ctl"))
            .arg(self.dir())
            .arg(if self.as_postgres { "yes" } else { "no" })
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .map_err(|source| TempPostgresError::Spawn {
                program: "sh (the server's watcher)".into(),
                source,
            })
    }
}

impl Drop for TempPostgres {
    fn drop(&mut self) {
        if self.port != 0 {
            let data = self.data_dir_text();
            if let Err(e) = self.run("pg_ctl", &["stop", "-D", &data, "-m", "immediate", "-w"]) {
                tracing::warn!(error = %e, "could not stop the test PostgreSQL server");
            }
        }
        if let Some(mut watcher) = self.watcher.take() {
            // Ours, by its handle: the directory goes with `dir` below.
            let _ = watcher.kill();
            let _ = watcher.wait();
        }
        if let Some(dir) = self.dir.take()
            && let Err(e) = dir.close()
        {
            tracing::warn!(error = %e, "could not remove the test PostgreSQL directory");
        }
    }
}

/// A self-signed CA (an EC P-256 key, valid two days) made with the
/// `openssl` command (Debian's postgresql packages depend on it, through
/// ssl-cert): `{name}.pem` and `{name}.key` in `dir`. Returns the
/// certificate's path. Also for a test's "some other CA".
pub fn throwaway_ca(dir: &Path, name: &str) -> Result<PathBuf, TempPostgresError> {
    let (certificate, key) = (
        dir.join(format!("{name}.pem")),
        dir.join(format!("{name}.key")),
    );
    let extensions = dir.join(format!("{name}.cnf"));
    std::fs::write(
        &extensions,
        "[req]\ndistinguished_name = name\n[name]\n[ca]\n\
         basicConstraints = critical, CA:TRUE\n\
         keyUsage = critical, keyCertSign, cRLSign\n\
         subjectKeyIdentifier = hash\n",
    )?;
    openssl_req(
        &["-x509", "-days", "2", "-extensions", "ca"],
        &format!("/CN=lila test {name}"),
        &extensions,
        &key,
        &certificate,
    )?;
    Ok(certificate)
}

/// `openssl req` with a new P-256 key, unencrypted, at `key`: a certificate
/// request for `subject` at `out`, or with `extra` (`-x509 …`) a
/// self-signed certificate.
fn openssl_req(
    extra: &[&str],
    subject: &str,
    config: &Path,
    key: &Path,
    out: &Path,
) -> Result<(), TempPostgresError> {
    let (config, key, out) = (
        config.display().to_string(),
        key.display().to_string(),
        out.display().to_string(),
    );
    let mut args = vec![
        "req",
        "-new",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-subj",
        subject,
        "-config",
        &config,
        "-keyout",
        &key,
        "-out",
        &out,
    ];
    args.extend_from_slice(extra);
    openssl(&args)
}

fn openssl(args: &[&str]) -> Result<(), TempPostgresError> {
    command_output("openssl", args).map(drop)
}

/// A whole error, its sources included, as one line.
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

fn command_output(program: &str, args: &[&str]) -> Result<String, TempPostgresError> {
    let output = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|source| TempPostgresError::Spawn {
            program: program.to_owned(),
            source,
        })?;
    if !output.status.success() {
        return Err(TempPostgresError::Failed {
            program: format!("{program} {}", args.join(" ")),
            output: String::from_utf8_lossy(&output.stderr).into_owned(),
        });
    }
    Ok(String::from_utf8_lossy(&output.stdout).trim().to_owned())
}

fn current_user_is_root() -> Result<bool, TempPostgresError> {
    Ok(command_output("id", &["-u"])? == "0")
}

fn postgres_user_ids() -> Result<(u32, u32), TempPostgresError> {
    let id = |flag: &str| -> Result<u32, TempPostgresError> {
        command_output("id", &[flag, "postgres"])
            .map_err(|_| TempPostgresError::NoPostgresUser)?
            .parse()
            .map_err(|_| TempPostgresError::NoPostgresUser)
    };
    Ok((id("-u")?, id("-g")?))
}

/// A port of 127.0.0.1 that nothing listens on right now.
fn free_port() -> Result<u16, TempPostgresError> {
    let listener = TcpListener::bind(("127.0.0.1", 0))?;
    Ok(listener.local_addr()?.port())
}
