//! Project tasks that cargo alone can't do. Run as `cargo xtask <command>`
//! (an alias defined in `.cargo/config.toml`); `cargo xtask help` lists the
//! commands.

use anyhow::{Context, Result, bail, ensure};
use sha2::{Digest, Sha256};

mod bench;
mod bench_langs;
mod demo;
mod fuzz;
mod langs;
mod reliability;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

/// The target plugins are compiled for: plain wasm, no WASI, no imports but
/// the ones the WIT contract declares.
const WASM_TARGET: &str = "wasm32-unknown-unknown";

/// Component-level imports a plugin may have: the contract's `host`
/// interface and the shared `types` interface its functions use.
const ALLOWED_IMPORTS: [&str; 2] = ["sonde:collector/host@0.2.0", "sonde:collector/types@0.2.0"];

/// The export every plugin must have.
const REQUIRED_EXPORT: &str = "sonde:collector/collector@0.2.0";

/// The workspace of the real plugins, and where their components go.
const PLUGINS: Workspace =
    Workspace { dir: "plugins", out_dir: "target/plugins", check: ComponentCheck::Plugin };

/// The workspace of the test fixtures (deliberately misbehaving plugins),
/// and where their components go.
const FIXTURES: Workspace =
    Workspace { dir: "tests/fixtures", out_dir: "target/fixtures", check: ComponentCheck::Fixture };

const HELP: &str = "\
Usage: cargo xtask <COMMAND>

Commands:
  plugins   Build every plugin under plugins/ for wasm32-unknown-unknown, turn each
            into a WebAssembly component and write target/plugins/<crate>.wasm
            (printing its size and sha256); folders holding plugin.py, plugin.js
            or plugin.c are built with componentize-py, componentize-js or
            wit-bindgen c + clang (installed under target/tools/ when missing)
            into target/plugins/<folder>.wasm
  fixtures  The same for the test fixtures under tests/fixtures/ (hostile plugins),
            writing target/fixtures/<crate>.wasm
  test      Build the plugins and the fixtures, run clippy (host, plugins and
            fixtures, -D warnings), check that the fuzz targets compile, and
            run every test of the workspace
  demo      The whole loop: preview the example events, then run the example
            axum server with sonde embedded against a real sonde-collector,
            send it real requests, and watch the collector's cost policy
            switch an expensive plugin off
  fuzz [--secs N] [TARGET...]
            Run each cargo-fuzz target under fuzz/ for N seconds (default 60);
            a crash is saved to fuzz/regressions/ and fails the command
  reliability [--only hostile|fleet]
            The long reliability runs (endpoint faults with record() latency,
            overload, collector under load, collector replicas on PostgreSQL,
            SIGKILL loop, hostile plugins) and the fuzzers; writes
            RELIABILITY.md (`--only hostile` or `--only fleet`: that section
            alone, in a few minutes)
  bench [--quick | --server | --languages] [--runs N]
            Every benchmark (criterion benches/ N times, dispatch_count under
            callgrind, the example server's routes under wrk with sonde off,
            on and each peer's layer, with RSS, http-status in Rust, Python,
            JavaScript and C), each beside its peers; rewrites BENCHMARKS.md
            (--server: only the wrk runs, printed; --languages: only the
            languages section, rewritten in place)
  scaffold-check
            Scaffold a plugin in each language with `sonde plugin new --lang`,
            build them and preview them (part of `test`)
  help      Print this help
";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: &[String]) -> Result<()> {
    let (command, rest) = match args.split_first() {
        Some((c, rest)) => (c.as_str(), rest),
        None => {
            eprint!("{HELP}");
            bail!("no command given");
        }
    };
    match command {
        "plugins" => {
            no_args(command, rest)?;
            let root = repo_root()?;
            let built = build_components(&root, &PLUGINS)?;
            print_built(&root, &built);
            check_example_pins(&root, &built);
            print_built(&root, &build_lang_plugins(&root, &PLUGINS)?);
            Ok(())
        }
        "fixtures" => {
            no_args(command, rest)?;
            let root = repo_root()?;
            print_built(&root, &build_fixtures(&root)?);
            Ok(())
        }
        "test" => {
            no_args(command, rest)?;
            run_tests(&repo_root()?)
        }
        "demo" => {
            no_args(command, rest)?;
            let root = repo_root()?;
            print_built(&root, &build_components(&root, &PLUGINS)?);
            demo::run(&root)
        }
        "bench" => bench::run(&repo_root()?, rest),
        "fuzz" => fuzz::run(&repo_root()?, rest),
        "reliability" => reliability::run(&repo_root()?, rest),
        "scaffold-check" => {
            no_args(command, rest)?;
            scaffold_check(&repo_root()?, true)
        }
        "help" | "--help" | "-h" => {
            print!("{HELP}");
            Ok(())
        }
        other => {
            eprint!("{HELP}");
            bail!("unknown command `{other}`")
        }
    }
}

/// Runs `cargo` with `args` in `root`, failing with the command line.
pub(crate) fn cargo(root: &Path, args: &[&str]) -> Result<()> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| OsString::from("cargo"));
    eprintln!("+ cargo {}", args.join(" "));
    let status =
        Command::new(cargo).args(args).current_dir(root).status().context("running cargo")?;
    ensure!(status.success(), "`cargo {}` failed ({status})", args.join(" "));
    Ok(())
}

fn print_built(root: &Path, built: &[BuiltPlugin]) {
    for p in built {
        println!(
            "{:<16} {:<36} {:>8} bytes  sha256 {}",
            p.name,
            p.path.strip_prefix(root).unwrap_or(&p.path).display(),
            p.size,
            p.sha256
        );
    }
}

/// Warns when `examples/sonde.toml` pins other bytes than were just built
/// (after a change to a plugin or the SDK, or on another toolchain).
fn check_example_pins(root: &Path, built: &[BuiltPlugin]) {
    let Ok(text) = std::fs::read_to_string(root.join("examples/sonde.toml")) else { return };
    let stale: Vec<&str> =
        built.iter().filter(|p| !text.contains(&p.sha256)).map(|p| p.name.as_str()).collect();
    if !stale.is_empty() {
        eprintln!(
            "note: examples/sonde.toml pins other bytes for {}; if the change is intended, run \
             `target/debug/sonde pin -m examples/sonde.toml`",
            stale.join(", ")
        );
    }
}

/// `sonde plugin new` must give a plugin that builds and previews out of the
/// box: scaffold one into a copy of the plugins workspace, build it, preview.
///
/// `build_cli`: build `sonde` first. `test` passes false: `cargo test` has just
/// built the binary, and a separate `cargo build -p sonde-cli` would resolve
/// other features and rebuild wasmtime.
fn scaffold_check(root: &Path, build_cli: bool) -> Result<()> {
    const SCAFFOLD: Workspace = Workspace {
        dir: "target/scaffold/plugins",
        out_dir: "target/scaffold/out",
        check: ComponentCheck::Plugin,
    };
    if build_cli {
        // `--workspace`: the features `cargo test --workspace` resolves, so
        // wasmtime is not rebuilt for other ones.
        cargo(root, &["build", "--quiet", "--workspace", "--bin", "sonde"])?;
    }
    let sonde = root.join("target/debug/sonde");
    ensure!(sonde.exists(), "{} is missing: build sonde-cli first", sonde.display());
    let dir = root.join("target/scaffold");
    let _ = std::fs::remove_dir_all(&dir);
    let ws = root.join(SCAFFOLD.dir);
    std::fs::create_dir_all(&ws)?;
    let text = std::fs::read_to_string(root.join("plugins/Cargo.toml"))?;
    let members = text
        .lines()
        .find(|l| l.starts_with("members"))
        .context("plugins/Cargo.toml has no members")?;
    std::fs::write(ws.join("Cargo.toml"), text.replace(members, "members = []"))?;
    std::fs::copy(root.join("plugins/Cargo.lock"), ws.join("Cargo.lock"))?;
    #[cfg(unix)]
    std::os::unix::fs::symlink(root.join("crates/sonde-sdk"), ws.join("sonde-sdk"))?;
    // One scaffold per language: `scaffold-check` (Rust), `scaffold-python`,
    // `scaffold-js`, `scaffold-c`.
    for lang in ["rust", "python", "js", "c"] {
        let name =
            if lang == "rust" { "scaffold-check".to_string() } else { format!("scaffold-{lang}") };
        let status = Command::new(&sonde)
            .args(["plugin", "new", &name, "--lang", lang, "--dir"])
            .arg(&ws)
            .stdout(std::process::Stdio::null())
            .status()?;
        ensure!(status.success(), "`sonde plugin new {name} --lang {lang}` failed");
    }
    let mut built = build_components(root, &SCAFFOLD)?;
    ensure!(built.len() == 1, "expected one scaffolded crate, built {}", built.len());
    built.extend(build_lang_plugins(root, &SCAFFOLD)?);
    ensure!(built.len() == 4, "expected four scaffolded plugins, built {}", built.len());
    let manifest = dir.join("sonde.toml");
    let mut text = String::from("[telemetry]\nmode = \"local\"\nstate_dir = \"state\"\n");
    for p in &built {
        let file = p.path.file_name().context("a file name")?.to_string_lossy();
        // Generous: a busy machine compiles a Python collector slowly in a
        // debug build; what is checked is that it loads and counts.
        text.push_str(&format!(
            "\n[[plugin]]\nname = \"{}\"\npath = \"out/{file}\"\nsha256 = \"{}\"\nallow = true\n\
             events = [\"http.request\"]\n[plugin.limits]\ncompile_timeout_secs = 600\n",
            p.name, p.sha256
        ));
    }
    std::fs::write(&manifest, text)?;
    let out = Command::new(&sonde)
        .args(["preview", "--format", "json", "-m"])
        .arg(&manifest)
        .arg("--events")
        .arg(root.join("examples/events.jsonl"))
        .output()?;
    ensure!(
        out.status.success(),
        "preview of the scaffold failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    let plugins = report["plugins"].as_array().context("no plugins in the report")?;
    ensure!(plugins.len() == 4, "four scaffolds in the report: {report}");
    let mut series = Vec::new();
    for plugin in plugins {
        let metrics = plugin["metrics"].as_array().cloned().unwrap_or_default();
        let total: f64 = metrics.iter().filter_map(|m| m["value"].as_f64()).sum();
        ensure!(
            plugin["state"] == "running" && total == 40.0,
            "the scaffolded plugin should count the 40 example events: {plugin}"
        );
        let labels: Vec<String> =
            metrics.iter().map(|m| format!("{}={}", m["labels"], m["value"])).collect();
        series.push(labels);
    }
    ensure!(series.windows(2).all(|w| w[0] == w[1]), "the four scaffolds count alike: {series:?}");
    println!(
        "scaffold check: `sonde plugin new --lang rust|python|js|c` each build, load and count \
         the 40 example events alike"
    );
    Ok(())
}

/// Installs VictoriaMetrics (the OTLP receiver of the OTLP end-to-end test)
/// under `target/tools` with `.ci/install-victoria-metrics`; returns its
/// binary. Without network the test is skipped locally, but in CI (`CI` set)
/// that is an error.
fn install_victoria_metrics(root: &Path) -> Result<Option<PathBuf>> {
    let dir = root.join("target/tools/victoria-metrics");
    eprintln!("+ .ci/install-victoria-metrics {}", dir.display());
    let out = Command::new(root.join(".ci/install-victoria-metrics"))
        .arg(&dir)
        .current_dir(root)
        .stderr(std::process::Stdio::inherit())
        .output()
        .context("running .ci/install-victoria-metrics")?;
    let path = String::from_utf8_lossy(&out.stdout).trim().to_string();
    if out.status.success() && !path.is_empty() {
        return Ok(Some(PathBuf::from(path)));
    }
    ensure!(std::env::var_os("CI").is_none(), "cannot install VictoriaMetrics for the OTLP test");
    eprintln!("warning: VictoriaMetrics not installed; the OTLP end-to-end test will be skipped");
    Ok(None)
}

/// Installs Prometheus (Debian's `prometheus`, 2.42 on bookworm), which
/// scrapes the example server's `/metrics` in its end-to-end test; returns
/// its binary. Without it the test is skipped locally, but in CI (`CI` set)
/// that is an error.
fn install_prometheus() -> Result<Option<PathBuf>> {
    match bench::ensure_apt("prometheus", "/usr/bin/prometheus") {
        Ok(path) => Ok(Some(path)),
        Err(e) if std::env::var_os("CI").is_none() => {
            eprintln!("warning: {e:#}; the Prometheus end-to-end test will be skipped");
            Ok(None)
        }
        Err(e) => Err(e.context("cannot install Prometheus for the /metrics test")),
    }
}

/// `cargo xtask test`: the README's test command.
fn run_tests(root: &Path) -> Result<()> {
    let start = std::time::Instant::now();
    print_built(root, &build_components(root, &PLUGINS)?);
    print_built(root, &build_lang_plugins(root, &PLUGINS)?);
    print_built(root, &build_fixtures(root)?);
    cargo(root, &["clippy", "--workspace", "--all-targets", "--", "-D", "warnings"])?;
    let plugins = PLUGINS.manifest(root);
    let plugins = plugins.to_str().context("non-UTF-8 repository path")?;
    let fixtures = FIXTURES.manifest(root);
    let fixtures = fixtures.to_str().context("non-UTF-8 repository path")?;
    let target = root.join("target");
    let target = target.to_str().context("non-UTF-8 repository path")?;
    for manifest in [plugins, fixtures] {
        cargo(
            root,
            &[
                "clippy",
                "--manifest-path",
                manifest,
                "--target",
                WASM_TARGET,
                "--target-dir",
                target,
                "--release",
                "--",
                "-D",
                "warnings",
            ],
        )?;
    }
    // The fuzz targets include the crates' parsers by path: keep them
    // compiling (`cargo xtask reliability` and `fuzz` build them for real).
    let fuzz = root.join("fuzz/Cargo.toml");
    let fuzz = fuzz.to_str().context("non-UTF-8 repository path")?;
    cargo(root, &["check", "--manifest-path", fuzz, "--target-dir", target, "--bins"])?;
    let victoria = install_victoria_metrics(root)?;
    let prometheus = install_prometheus()?;
    ensure_postgres()?;
    let (chromium, chromedriver) = ensure_chromium()?;
    eprintln!("+ cargo test --workspace");
    let cargo_bin = std::env::var_os("CARGO").unwrap_or_else(|| OsString::from("cargo"));
    let mut test = Command::new(&cargo_bin);
    test.args(["test", "--workspace"]).current_dir(root);
    if let Some(vm) = &victoria {
        test.env("SONDE_VICTORIA_METRICS", vm);
    }
    if let Some(p) = &prometheus {
        test.env("SONDE_PROMETHEUS", p);
    }
    test.env("SONDE_CHROMIUM", &chromium).env("SONDE_CHROMEDRIVER", &chromedriver);
    ensure!(test.status().context("running cargo test")?.success(), "`cargo test` failed");
    // Every public item is documented (deny(missing_docs)) and the docs
    // build without a warning.
    eprintln!("+ RUSTDOCFLAGS=-Dwarnings cargo doc --workspace --no-deps");
    let status = Command::new(cargo_bin)
        .args(["doc", "--workspace", "--no-deps", "--quiet"])
        .env("RUSTDOCFLAGS", "-D warnings")
        .current_dir(root)
        .status()?;
    ensure!(status.success(), "`cargo doc` has warnings");
    for manifest in [plugins, fixtures] {
        cargo(root, &["test", "--manifest-path", manifest, "--target-dir", target])?;
    }
    langs::sdk_tests(root)?;
    scaffold_check(root, false)?;
    println!("xtask test: all green in {:.0?}", start.elapsed());
    Ok(())
}

/// PostgreSQL 15 (the Debian package `postgresql-15`), for the collector's
/// PostgreSQL tests and the fleet reliability section, which start servers
/// of their own from its binaries (`sonde-test-postgres`). The package's
/// major version is pinned by its name; Debian ships its security updates.
pub(crate) fn ensure_postgres() -> Result<PathBuf> {
    bench::ensure_apt("postgresql-15", "/usr/lib/postgresql/15/bin/initdb")
}

/// Headless Chromium and its chromedriver (the Debian packages `chromium`
/// and `chromium-driver`), for the collector's dashboard tests in a real
/// browser.
fn ensure_chromium() -> Result<(PathBuf, PathBuf)> {
    let chromium = bench::ensure_apt("chromium", "/usr/bin/chromium")?;
    let driver = bench::ensure_apt("chromium-driver", "/usr/bin/chromedriver")?;
    Ok((chromium, driver))
}

fn no_args(command: &str, rest: &[String]) -> Result<()> {
    ensure!(rest.is_empty(), "`{command}` takes no arguments, got {rest:?}");
    Ok(())
}

/// The repository root: the parent of this crate's directory.
fn repo_root() -> Result<PathBuf> {
    let manifest_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest_dir.parent().map(Path::to_path_buf).context("xtask has no parent directory")
}

/// A cargo workspace of wasm crates turned into components: the plugins or
/// the test fixtures.
#[derive(Debug)]
struct Workspace {
    /// The workspace's directory, relative to the repository root.
    dir: &'static str,
    /// Where the components are written, relative to the repository root.
    out_dir: &'static str,
    /// How the components are checked.
    check: ComponentCheck,
}

impl Workspace {
    /// The workspace's `Cargo.toml`.
    fn manifest(&self, root: &Path) -> PathBuf {
        root.join(self.dir).join("Cargo.toml")
    }
}

/// What [`check_component`] requires of a component.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ComponentCheck {
    /// A real plugin: imports nothing but [`ALLOWED_IMPORTS`] and exports
    /// [`REQUIRED_EXPORT`].
    Plugin,
    /// A test fixture: imports nothing from WASI, and nothing else is
    /// required. Fixtures break the contract on purpose, and it is the host
    /// that must catch them (`other-wit` imports and exports the 0.2.0
    /// interfaces); WASI imports, though, would only mean a broken build.
    Fixture,
    /// A fixture built to import what the host refuses (WASI, or an
    /// interface outside the contract): only that it is a component.
    AnyImports,
}

/// A wasm crate of a [`Workspace`].
#[derive(Debug)]
struct Plugin {
    /// The crate's package name, e.g. `http-status`.
    name: String,
}

impl Plugin {
    /// The file stem cargo gives the crate's artifacts, e.g. `http_status`.
    fn stem(&self) -> String {
        self.name.replace('-', "_")
    }
}

/// A built plugin component.
#[derive(Debug)]
pub(crate) struct BuiltPlugin {
    /// The crate's package name.
    pub(crate) name: String,
    /// Where the component was written.
    pub(crate) path: PathBuf,
    /// Size in bytes.
    pub(crate) size: usize,
    /// Lower-case hex sha256 of the component bytes.
    pub(crate) sha256: String,
}

/// `cargo xtask plugins` and `cargo xtask fixtures`: builds, componentizes
/// and checks every crate of `workspace`, writing
/// `<workspace.out_dir>/<crate>.wasm`.
/// The fixtures, and the variants of `hostile` that only a rewrite of its
/// core module can make: the same plugin with extra linear memories (Rust
/// never emits a second memory), for the per-plugin memory cap.
pub(crate) fn build_fixtures(root: &Path) -> Result<Vec<BuiltPlugin>> {
    let mut built = build_components(root, &FIXTURES)?;
    built.extend(build_lang_plugins(root, &FIXTURES)?);
    let core_path = root.join("target").join(WASM_TARGET).join("release/hostile.wasm");
    let core =
        std::fs::read(&core_path).with_context(|| format!("reading {}", core_path.display()))?;
    // (file, extra memories, 64 KiB pages each)
    for (name, count, pages) in [
        ("hostile_memories_40", 40, 1),
        ("hostile_memories_8x8mib", 8, 128),
        ("hostile_memories_3x4mib", 3, 64),
    ] {
        let module = add_memories(&core, count, pages)
            .with_context(|| format!("adding memories for `{name}`"))?;
        let component =
            componentize(&module).with_context(|| format!("componentizing `{name}`"))?;
        let path = root.join(FIXTURES.out_dir).join(format!("{name}.wasm"));
        std::fs::write(&path, &component).with_context(|| format!("writing {}", path.display()))?;
        let sha256 = hex::encode(Sha256::digest(&component));
        built.push(BuiltPlugin {
            name: name.replace('_', "-"),
            path,
            size: component.len(),
            sha256,
        });
    }
    Ok(built)
}

/// The Python, JavaScript and C plugins of `workspace` (see `langs.rs`);
/// for the fixtures, also the hostile ones' variants that import what the
/// host refuses: `hostile_py_wasi` and `hostile_js_wasi` (built with their
/// toolchain's WASI) and `hostile_c_env` (built against a world importing
/// `wasi:cli/environment`).
pub(crate) fn build_lang_plugins(root: &Path, workspace: &Workspace) -> Result<Vec<BuiltPlugin>> {
    let mut plugins = langs::discover(&root.join(workspace.dir), workspace.check)?;
    if workspace.check == ComponentCheck::Fixture {
        let variants: Vec<langs::LangPlugin> = plugins
            .iter()
            .filter_map(|p| {
                let (suffix, flavor) = match p.stem.as_str() {
                    "hostile_py" | "hostile_js" => ("wasi", langs::Flavor::WithWasi),
                    "hostile_c" => ("env", langs::Flavor::OwnWorld),
                    _ => return None,
                };
                Some(langs::LangPlugin {
                    stem: format!("{}_{suffix}", p.stem),
                    flavor,
                    ..p.clone()
                })
            })
            .collect();
        plugins.extend(variants);
    }
    langs::build_all(root, &plugins, &root.join(workspace.out_dir))
}

/// `core` with `count` more linear memories of `pages` pages each, defined
/// after its own (so no index in its code changes) and not exported.
fn add_memories(core: &[u8], count: u32, pages: u64) -> Result<Vec<u8>> {
    use wasm_encoder::reencode::{Error, Reencode, RoundtripReencoder, utils};
    struct More {
        count: u32,
        pages: u64,
    }
    impl Reencode for More {
        type Error = std::convert::Infallible;
        fn parse_memory_section(
            &mut self,
            memories: &mut wasm_encoder::MemorySection,
            section: wasmparser::MemorySectionReader<'_>,
        ) -> Result<(), Error<Self::Error>> {
            utils::parse_memory_section(&mut RoundtripReencoder, memories, section)?;
            for _ in 0..self.count {
                memories.memory(wasm_encoder::MemoryType {
                    minimum: self.pages,
                    maximum: None,
                    memory64: false,
                    shared: false,
                    page_size_log2: None,
                });
            }
            Ok(())
        }
    }
    let mut module = wasm_encoder::Module::new();
    More { count, pages }
        .parse_core_module(&mut module, wasmparser::Parser::new(0), core)
        .map_err(|e| anyhow::anyhow!("{e:?}"))?;
    Ok(module.finish())
}

fn build_components(root: &Path, workspace: &Workspace) -> Result<Vec<BuiltPlugin>> {
    let plugins = discover_plugins(&root.join(workspace.dir))?;
    ensure!(!plugins.is_empty(), "no plugin crates under {}/", workspace.dir);
    ensure_wasm_target()?;

    let target_dir = root.join("target");
    cargo_build(root, &workspace.manifest(root), &target_dir)?;

    let core_dir = target_dir.join(WASM_TARGET).join("release");
    let out_dir = root.join(workspace.out_dir);
    std::fs::create_dir_all(&out_dir).with_context(|| format!("creating {}", out_dir.display()))?;

    let mut built = Vec::new();
    for plugin in &plugins {
        let core_path = core_dir.join(format!("{}.wasm", plugin.stem()));
        let core = std::fs::read(&core_path).with_context(|| {
            format!(
                "reading {} (is `{}` a member of {}/Cargo.toml's workspace, \
                 with crate-type = [\"cdylib\"]?)",
                core_path.display(),
                plugin.name,
                workspace.dir
            )
        })?;
        let component = componentize(&core)
            .with_context(|| format!("turning `{}` into a component", plugin.name))?;
        check_component(&component, workspace.check)
            .with_context(|| format!("checking the component of `{}`", plugin.name))?;

        let path = out_dir.join(format!("{}.wasm", plugin.stem()));
        std::fs::write(&path, &component).with_context(|| format!("writing {}", path.display()))?;
        let sha256 = hex::encode(Sha256::digest(&component));
        built.push(BuiltPlugin { name: plugin.name.clone(), path, size: component.len(), sha256 });
    }
    Ok(built)
}

/// The plugin crates: every directory under `dir` (`plugins/` or
/// `tests/fixtures/`) holding a `Cargo.toml`, sorted by name.
///
/// Symlinks are skipped: `plugins/sonde-sdk` (and `tests/fixtures/sonde-sdk`)
/// links to the SDK crate (see `plugins/Cargo.toml` for why), which is a
/// library, not a plugin.
fn discover_plugins(dir: &Path) -> Result<Vec<Plugin>> {
    let mut plugins = Vec::new();
    for entry in std::fs::read_dir(dir).with_context(|| format!("listing {}", dir.display()))? {
        let entry = entry?;
        let manifest = entry.path().join("Cargo.toml");
        // `DirEntry::file_type` does not follow symlinks.
        if !entry.file_type()?.is_dir() || !manifest.is_file() {
            continue;
        }
        let text = std::fs::read_to_string(&manifest)
            .with_context(|| format!("reading {}", manifest.display()))?;
        let name = package_name(&text)
            .with_context(|| format!("no [package] name in {}", manifest.display()))?;
        plugins.push(Plugin { name });
    }
    plugins.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(plugins)
}

/// The `name` of the `[package]` table of a Cargo manifest.
///
/// A deliberately small reader (plugin manifests are plain): the first
/// `name = "..."` line inside `[package]`.
fn package_name(manifest: &str) -> Option<String> {
    let mut in_package = false;
    for line in manifest.lines() {
        let line = line.trim();
        if line.starts_with('[') {
            in_package = line == "[package]";
            continue;
        }
        if !in_package {
            continue;
        }
        if let Some((key, value)) = line.split_once('=')
            && key.trim() == "name"
        {
            let value = value.trim();
            let value = value.strip_prefix('"')?.split('"').next()?;
            return Some(value.to_owned());
        }
    }
    None
}

/// Makes sure rustup has the wasm target installed, installing it if not.
fn ensure_wasm_target() -> Result<()> {
    let output = match Command::new("rustup").args(["target", "list", "--installed"]).output() {
        Ok(o) => o,
        Err(e) => {
            // No rustup: the toolchain may still have the target; cargo will
            // say so clearly if it does not.
            eprintln!("warning: cannot run rustup ({e}); assuming {WASM_TARGET} is installed");
            return Ok(());
        }
    };
    ensure!(
        output.status.success(),
        "`rustup target list --installed` failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let installed = String::from_utf8_lossy(&output.stdout);
    if installed.lines().any(|l| l.trim() == WASM_TARGET) {
        return Ok(());
    }
    eprintln!("installing the {WASM_TARGET} target with rustup");
    let status = Command::new("rustup")
        .args(["target", "add", WASM_TARGET])
        .status()
        .context("running rustup target add")?;
    ensure!(status.success(), "`rustup target add {WASM_TARGET}` failed");
    Ok(())
}

/// `cargo build --release` of the workspace of `manifest` (the plugins' or
/// the fixtures') for the wasm target.
///
/// The repository root and `CARGO_HOME` are remapped in every path the
/// compiler embeds, so the bytes do not depend on where the repository is
/// checked out or where cargo keeps its registry.
fn cargo_build(root: &Path, manifest: &Path, target_dir: &Path) -> Result<()> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| OsString::from("cargo"));
    let mut flags = vec![remap(root, "/sonde")];
    if let Some(home) = cargo_home() {
        flags.push(remap(&home, "/cargo"));
    }
    let encoded = flags.join(&OsString::from("\u{1f}"));

    let status = Command::new(cargo)
        .current_dir(root)
        .args(["build", "--release", "--target", WASM_TARGET])
        .arg("--manifest-path")
        .arg(manifest)
        .arg("--target-dir")
        .arg(target_dir)
        // The flags are ours alone: anything inherited would change the bytes.
        .env_remove("RUSTFLAGS")
        .env("CARGO_ENCODED_RUSTFLAGS", encoded)
        .status()
        .with_context(|| format!("running cargo build for {}", manifest.display()))?;
    ensure!(status.success(), "building {} failed", manifest.display());
    Ok(())
}

/// `--remap-path-prefix=<from>=<to>`.
fn remap(from: &Path, to: &str) -> OsString {
    let mut flag = OsString::from("--remap-path-prefix=");
    flag.push(from.as_os_str());
    flag.push("=");
    flag.push(to);
    flag
}

/// Where cargo keeps its registry: `$CARGO_HOME`, else `~/.cargo`.
fn cargo_home() -> Option<PathBuf> {
    if let Some(home) = std::env::var_os("CARGO_HOME") {
        return Some(PathBuf::from(home));
    }
    std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo"))
}

/// Turns a core wasm module (with the `component-type` custom section that
/// wit-bindgen embeds) into a validated component.
pub(crate) fn componentize(core: &[u8]) -> Result<Vec<u8>> {
    wit_component::ComponentEncoder::default().module(core)?.validate(true).encode()
}

/// Checks that a component imports nothing from WASI and, for a real plugin
/// ([`ComponentCheck::Plugin`]), nothing but the contract's `host` (and
/// `types`) interfaces, and that it exports the `collector` interface.
pub(crate) fn check_component(component: &[u8], check: ComponentCheck) -> Result<()> {
    let decoded = wit_component::decode(component).context("decoding the component")?;
    let wit_component::DecodedWasm::Component(resolve, world) = decoded else {
        bail!("not a component");
    };
    if check == ComponentCheck::AnyImports {
        return Ok(());
    }
    let world = &resolve.worlds[world];
    let imports: Vec<String> = world.imports.keys().map(|k| resolve.name_world_key(k)).collect();
    let exports: Vec<String> = world.exports.keys().map(|k| resolve.name_world_key(k)).collect();
    let wasi: Vec<&String> = imports.iter().filter(|i| i.starts_with("wasi:")).collect();
    ensure!(
        wasi.is_empty(),
        "the plugin imports WASI ({wasi:?}); plugins must be built for {WASM_TARGET} \
         and use nothing but sonde:collector/host"
    );
    if check == ComponentCheck::Fixture {
        return Ok(());
    }
    let unexpected: Vec<&String> =
        imports.iter().filter(|i| !ALLOWED_IMPORTS.contains(&i.as_str())).collect();
    ensure!(
        unexpected.is_empty(),
        "unexpected imports {unexpected:?}: only {ALLOWED_IMPORTS:?} are allowed"
    );
    ensure!(
        exports.iter().any(|e| e == REQUIRED_EXPORT),
        "the component does not export {REQUIRED_EXPORT} (exports: {exports:?})"
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_package_names() {
        let manifest = "[workspace]\nname = \"no\"\n\n[package]\nversion = \"1\"\nname = \"http-status\" # c\n[dependencies]\nname = \"x\"\n";
        assert_eq!(package_name(manifest).as_deref(), Some("http-status"));
        assert_eq!(package_name("[dependencies]\nname = \"x\"\n"), None);
    }

    #[test]
    fn remaps_paths() {
        assert_eq!(
            remap(Path::new("/a/b"), "/sonde"),
            OsString::from("--remap-path-prefix=/a/b=/sonde")
        );
    }
}
