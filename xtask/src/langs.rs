//! Collectors in Python, JavaScript and C: the pinned toolchains (installed
//! under `target/tools/` when missing) and the builds of every such plugin.
//!
//! A plugin directory (under `plugins/` or `tests/fixtures/`) without a
//! `Cargo.toml` whose source is `plugin.py`, `plugin.js` or `plugin.c` is
//! built by its language's toolchain into `<out_dir>/<dir_with_underscores>.wasm`:
//!
//! - Python: componentize-py with `--stub-wasi` (no WASI import), the SDK
//!   (`sdk/python`) on its path;
//! - JavaScript: componentize-js with every WASI feature disabled, from a
//!   staging folder holding the plugin and the SDK (`sdk/js/sonde.js`, which
//!   the plugin imports as `./sonde.js`);
//! - C: `wit-bindgen c` bindings, clang for `wasm32-unknown-unknown`
//!   (freestanding, no libc, the SDK's allocator), linked by `wasm-ld`, then
//!   componentized like the Rust plugins.
//!
//! Each component is checked like a Rust one (imports and export). Builds
//! run two at a time.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

use anyhow::{Context, Result, bail, ensure};
use sha2::{Digest, Sha256};

use crate::{BuiltPlugin, ComponentCheck, check_component, componentize};

/// componentize-py, from PyPI.
pub(crate) const COMPONENTIZE_PY: &str = "0.25.1";
/// `@bytecodealliance/componentize-js`, from npm (the exact tree is
/// `xtask/toolchains/js/package-lock.json`).
pub(crate) const COMPONENTIZE_JS: &str = "0.23.0";
/// `wit-bindgen-cli`, from crates.io (`wit-bindgen c`).
pub(crate) const WIT_BINDGEN_CLI: &str = "0.63.0";
/// The Debian packages of the C toolchain, and where they put clang.
const CLANG_PACKAGES: [(&str, &str); 2] =
    [("clang-16", "/usr/lib/llvm-16/bin/clang"), ("lld-16", "/usr/lib/llvm-16/bin/wasm-ld")];
const CLANG: &str = "/usr/lib/llvm-16/bin/clang";

/// componentize-js features, all disabled: with any of them the component
/// imports WASI, which the host refuses.
const JS_FEATURES: [&str; 5] = ["stdio", "random", "clocks", "http", "fetch-event"];

/// A plugin's language.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Lang {
    Python,
    Js,
    C,
}

impl Lang {
    const ALL: [Lang; 3] = [Lang::Python, Lang::Js, Lang::C];

    /// The plugin's source file in its directory.
    pub(crate) fn source(self) -> &'static str {
        match self {
            Lang::Python => "plugin.py",
            Lang::Js => "plugin.js",
            Lang::C => "plugin.c",
        }
    }

    /// The language's name in tables.
    pub(crate) fn label(self) -> &'static str {
        match self {
            Lang::Python => "Python",
            Lang::Js => "JavaScript",
            Lang::C => "C",
        }
    }
}

/// How a plugin is built.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Flavor {
    /// The contract's world, no WASI.
    Plain,
    /// Python and JavaScript: the toolchain's defaults, which import WASI
    /// (for the hostile suite: the host must refuse it by name).
    WithWasi,
    /// C: against the world in the plugin's own `wit/` folder, compiled with
    /// `-DSONDE_HOSTILE_ENV` (for the hostile suite: an extra import).
    OwnWorld,
}

/// One plugin to build in a language other than Rust.
#[derive(Debug, Clone)]
pub(crate) struct LangPlugin {
    /// Its directory.
    pub(crate) dir: PathBuf,
    pub(crate) lang: Lang,
    /// The component's file stem, e.g. `http_status_py`.
    pub(crate) stem: String,
    pub(crate) flavor: Flavor,
    /// How the built component is checked.
    pub(crate) check: ComponentCheck,
}

/// The language plugins directly under `dir` (directories holding a
/// `plugin.py`, `plugin.js` or `plugin.c` and no `Cargo.toml`), by name.
pub(crate) fn discover(dir: &Path, check: ComponentCheck) -> Result<Vec<LangPlugin>> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).with_context(|| format!("listing {}", dir.display()))? {
        let entry = entry?;
        let path = entry.path();
        if !entry.file_type()?.is_dir() || path.join("Cargo.toml").exists() {
            continue;
        }
        let Some(lang) = Lang::ALL.into_iter().find(|l| path.join(l.source()).is_file()) else {
            continue;
        };
        let name = entry.file_name().to_string_lossy().replace('-', "_");
        found.push(LangPlugin { dir: path, lang, stem: name, flavor: Flavor::Plain, check });
    }
    found.sort_by(|a, b| a.stem.cmp(&b.stem));
    Ok(found)
}

/// The pinned toolchains, as installed.
#[derive(Debug, Default)]
pub(crate) struct Toolchains {
    componentize_py: Option<PathBuf>,
    componentize_js: Option<PathBuf>,
    wit_bindgen: Option<PathBuf>,
}

/// Runs `cmd`, failing with its command line and its output.
fn run(cmd: &mut Command, what: &str) -> Result<()> {
    let out = cmd.output().with_context(|| format!("running {what}"))?;
    if !out.status.success() {
        bail!(
            "{what} failed ({}):\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

/// Whether `bin --version` runs and prints `version`.
fn has_version(bin: &Path, version: &str) -> bool {
    Command::new(bin)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success() && String::from_utf8_lossy(&o.stdout).contains(version))
}

/// Installs (when missing) what building plugins in `langs` needs: a venv
/// with componentize-py, an npm prefix with componentize-js (from the
/// committed lock file), `wit-bindgen-cli` by `cargo install`, clang and lld
/// from Debian. Everything but the Debian packages lives under
/// `target/tools/`.
pub(crate) fn ensure_toolchains(root: &Path, langs: &[Lang]) -> Result<Toolchains> {
    let tools = root.join("target/tools");
    let mut t = Toolchains::default();
    if langs.contains(&Lang::Python) {
        let venv = tools.join("python");
        let bin = venv.join("bin/componentize-py");
        if !has_version(&bin, COMPONENTIZE_PY) {
            let started = std::time::Instant::now();
            eprintln!("+ installing componentize-py {COMPONENTIZE_PY} into {}", venv.display());
            let python = std::env::var_os("PYTHON").unwrap_or_else(|| "python3".into());
            run(Command::new(python).args(["-m", "venv"]).arg(&venv), "python3 -m venv")?;
            run(
                Command::new(venv.join("bin/pip")).args([
                    "install",
                    "--quiet",
                    "--disable-pip-version-check",
                    &format!("componentize-py=={COMPONENTIZE_PY}"),
                ]),
                "pip install componentize-py",
            )?;
            ensure!(has_version(&bin, COMPONENTIZE_PY), "componentize-py did not install");
            eprintln!("  componentize-py installed in {:.0?}", started.elapsed());
        }
        t.componentize_py = Some(bin);
    }
    if langs.contains(&Lang::Js) {
        let prefix = tools.join("js");
        let pinned = root.join("xtask/toolchains/js");
        let lock = std::fs::read(pinned.join("package-lock.json"))
            .context("reading xtask/toolchains/js/package-lock.json")?;
        let stamp = prefix.join(".installed");
        let want = hex::encode(Sha256::digest(&lock));
        let cli = prefix.join("node_modules/@bytecodealliance/componentize-js/src/cli.js");
        if std::fs::read_to_string(&stamp).ok().as_deref() != Some(want.as_str()) || !cli.exists() {
            let started = std::time::Instant::now();
            eprintln!("+ npm ci componentize-js {COMPONENTIZE_JS} into {}", prefix.display());
            std::fs::create_dir_all(&prefix)?;
            for file in ["package.json", "package-lock.json"] {
                std::fs::copy(pinned.join(file), prefix.join(file))?;
            }
            run(
                Command::new("npm")
                    .args(["ci", "--no-audit", "--no-fund", "--loglevel=error"])
                    .current_dir(&prefix),
                "npm ci (componentize-js)",
            )?;
            std::fs::write(&stamp, &want)?;
            eprintln!("  componentize-js installed in {:.0?}", started.elapsed());
        }
        t.componentize_js = Some(cli);
    }
    if langs.contains(&Lang::C) {
        for (pkg, path) in CLANG_PACKAGES {
            crate::bench::ensure_apt(pkg, path)?;
        }
        let dir = tools.join("wit-bindgen");
        let bin = dir.join("bin/wit-bindgen");
        if !has_version(&bin, WIT_BINDGEN_CLI) {
            let started = std::time::Instant::now();
            let dir = dir.to_str().context("non-UTF-8 repository path")?;
            crate::cargo(
                root,
                &[
                    "install",
                    "--quiet",
                    "--locked",
                    "wit-bindgen-cli",
                    "--version",
                    WIT_BINDGEN_CLI,
                    "--no-default-features",
                    "--features",
                    "c",
                    "--root",
                    dir,
                ],
            )?;
            eprintln!("  wit-bindgen-cli installed in {:.0?}", started.elapsed());
        }
        t.wit_bindgen = Some(bin);
    }
    Ok(t)
}

/// Builds every plugin of `plugins` into `out_dir`, two at a time, after
/// installing the toolchains they need.
pub(crate) fn build_all(
    root: &Path,
    plugins: &[LangPlugin],
    out_dir: &Path,
) -> Result<Vec<BuiltPlugin>> {
    if plugins.is_empty() {
        return Ok(Vec::new());
    }
    let mut langs: Vec<Lang> = plugins.iter().map(|p| p.lang).collect();
    langs.sort();
    langs.dedup();
    let tools = ensure_toolchains(root, &langs)?;
    std::fs::create_dir_all(out_dir)?;
    let queue = Mutex::new(plugins.iter().collect::<Vec<_>>());
    let results = Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for _ in 0..2 {
            s.spawn(|| {
                loop {
                    let Some(p) = queue.lock().expect("queue").pop() else { break };
                    let started = std::time::Instant::now();
                    let built = build_one(root, &tools, p, out_dir)
                        .with_context(|| format!("building {} ({})", p.stem, p.lang.label()));
                    if built.is_ok() {
                        eprintln!("  built {}.wasm in {:.0?}", p.stem, started.elapsed());
                    }
                    results.lock().expect("results").push(built);
                }
            });
        }
    });
    let mut built =
        results.into_inner().expect("results").into_iter().collect::<Result<Vec<_>>>()?;
    built.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(built)
}

/// A digest of everything a build reads: the plugin's folder, its SDK (not
/// the SDK's own tests), the contract, the toolchain versions and the
/// flavor.
fn inputs_digest(root: &Path, p: &LangPlugin) -> Result<String> {
    fn add_dir(h: &mut Sha256, dir: &Path) -> Result<()> {
        let mut entries: Vec<PathBuf> =
            std::fs::read_dir(dir)?.map(|e| e.map(|e| e.path())).collect::<Result<_, _>>()?;
        entries.sort();
        for path in entries {
            if path.is_dir() {
                if path.file_name().is_some_and(|n| {
                    ["__pycache__", "test", "tests"].contains(&n.to_str().unwrap_or_default())
                }) {
                    continue;
                }
                add_dir(h, &path)?;
            } else {
                h.update(path.to_string_lossy().as_bytes());
                h.update(std::fs::read(&path)?);
            }
        }
        Ok(())
    }
    // Bump when a build command changes: every language component rebuilds.
    const RECIPE: u32 = 2;
    let mut h = Sha256::new();
    h.update(format!(
        "{RECIPE} {:?} {:?} {COMPONENTIZE_PY} {COMPONENTIZE_JS} {WIT_BINDGEN_CLI} {CLANG}",
        p.lang, p.flavor
    ));
    add_dir(&mut h, &p.dir)?;
    add_dir(&mut h, &root.join("wit"))?;
    let sdk = match p.lang {
        Lang::Python => "sdk/python",
        Lang::Js => "sdk/js",
        Lang::C => "sdk/c",
    };
    add_dir(&mut h, &root.join(sdk))?;
    Ok(hex::encode(h.finalize()))
}

fn build_one(
    root: &Path,
    tools: &Toolchains,
    p: &LangPlugin,
    out_dir: &Path,
) -> Result<BuiltPlugin> {
    let out = out_dir.join(format!("{}.wasm", p.stem));
    // Unchanged inputs: the component built from them last time (a Python
    // or JavaScript build takes 15-40 s of CPU).
    let stamp = out_dir.join(format!(".{}.inputs", p.stem));
    let digest = inputs_digest(root, p)?;
    if std::fs::read_to_string(&stamp).ok().as_deref() == Some(digest.as_str())
        && let Ok(component) = std::fs::read(&out)
    {
        let sha256 = hex::encode(Sha256::digest(&component));
        let name = p.stem.replace('_', "-");
        return Ok(BuiltPlugin { name, path: out, size: component.len(), sha256 });
    }
    let _ = std::fs::remove_file(&stamp);
    let built = build_fresh(root, tools, p, &out)?;
    std::fs::write(&stamp, digest)?;
    Ok(built)
}

fn build_fresh(root: &Path, tools: &Toolchains, p: &LangPlugin, out: &Path) -> Result<BuiltPlugin> {
    let out = out.to_path_buf();
    let wit = root.join("wit");
    let component = match p.lang {
        Lang::Python => {
            let bin = tools.componentize_py.as_ref().context("componentize-py")?;
            // componentize-py bundles every file under the paths it is
            // given (`__pycache__` included): stage the plugin's and the
            // SDK package's `.py` files alone, so that the bytes depend on
            // the sources only.
            let stage = root.join("target/lang-build").join(&p.stem);
            let _ = std::fs::remove_dir_all(&stage);
            copy_py(&p.dir, &stage.join("app"))?;
            copy_py(&root.join("sdk/python/sonde_sdk"), &stage.join("sdk/sonde_sdk"))?;
            let mut cmd = Command::new(bin);
            cmd.arg("-d")
                .arg(&wit)
                .args(["-w", "metric-collector", "componentize", "plugin", "-p"])
                .arg(stage.join("app"))
                .arg("-p")
                .arg(stage.join("sdk"))
                .arg("-o")
                .arg(&out)
                .env("PYTHONDONTWRITEBYTECODE", "1");
            if p.flavor != Flavor::WithWasi {
                cmd.arg("--stub-wasi");
            }
            run(&mut cmd, "componentize-py")?;
            std::fs::read(&out)?
        }
        Lang::Js => {
            let cli = tools.componentize_js.as_ref().context("componentize-js")?;
            // componentize-js reads imported modules from the source's
            // folder: stage the plugin beside the SDK.
            let stage = root.join("target/lang-build").join(&p.stem);
            let _ = std::fs::remove_dir_all(&stage);
            std::fs::create_dir_all(&stage)?;
            for entry in std::fs::read_dir(&p.dir)? {
                let entry = entry?;
                if entry.file_type()?.is_file() {
                    std::fs::copy(entry.path(), stage.join(entry.file_name()))?;
                }
            }
            std::fs::copy(root.join("sdk/js/sonde.js"), stage.join("sonde.js"))?;
            // Its WIT reader sees the working directory only: stage the
            // contract too.
            std::fs::create_dir_all(stage.join("wit"))?;
            std::fs::copy(wit.join("collector.wit"), stage.join("wit/collector.wit"))?;
            let mut cmd = Command::new("node");
            cmd.arg(cli).arg("plugin.js").args([
                "--wit",
                "wit",
                "--world-name",
                "metric-collector",
            ]);
            if p.flavor != Flavor::WithWasi {
                cmd.arg("--disable").args(JS_FEATURES);
            }
            cmd.arg("-o").arg(&out).current_dir(&stage);
            run(&mut cmd, "componentize-js")?;
            std::fs::read(&out)?
        }
        Lang::C => {
            let core = build_c(root, tools, p)?;
            let component = componentize(&core)?;
            std::fs::write(&out, &component)?;
            component
        }
    };
    let check = if p.flavor == Flavor::Plain { p.check } else { ComponentCheck::AnyImports };
    check_component(&component, check)?;
    let sha256 = hex::encode(Sha256::digest(&component));
    Ok(BuiltPlugin { name: p.stem.replace('_', "-"), path: out, size: component.len(), sha256 })
}

/// Copies the `.py` files directly in `from` into `to` (created).
fn copy_py(from: &Path, to: &Path) -> Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let path = entry?.path();
        if path.is_file() && path.extension().is_some_and(|e| e == "py") {
            std::fs::copy(&path, to.join(path.file_name().context("a file name")?))?;
        }
    }
    Ok(())
}

/// Compiles and links a C plugin into a core module (with the
/// `component-type` section `wit-bindgen c` emits).
fn build_c(root: &Path, tools: &Toolchains, p: &LangPlugin) -> Result<Vec<u8>> {
    let wit_bindgen = tools.wit_bindgen.as_ref().context("wit-bindgen")?;
    let work = root.join("target/lang-build").join(&p.stem);
    let _ = std::fs::remove_dir_all(&work);
    let bindings = work.join("bindings");
    std::fs::create_dir_all(&bindings)?;
    let wit = if p.flavor == Flavor::OwnWorld { p.dir.join("wit") } else { root.join("wit") };
    run(
        Command::new(wit_bindgen)
            .arg("c")
            .arg(&wit)
            .args(["--world", "metric-collector", "--out-dir"])
            .arg(&bindings),
        "wit-bindgen c",
    )?;
    let sdk = root.join("sdk/c");
    let core = work.join("plugin.wasm");
    let mut cmd = Command::new(CLANG);
    cmd.args([
        "--target=wasm32-unknown-unknown",
        "-O2",
        "-ffreestanding",
        "-nostdlib",
        "-std=c11",
        "-Wall",
        "-Wextra",
        "-Werror",
        // wit-bindgen's output leaves parameters unused.
        "-Wno-unused-parameter",
        "-Wl,--no-entry",
        "-Wl,--strip-debug",
    ])
    .arg("-isystem")
    .arg(sdk.join("libc"))
    .arg("-I")
    .arg(&sdk)
    .arg("-I")
    .arg(&bindings);
    if p.flavor == Flavor::OwnWorld {
        cmd.arg("-DSONDE_HOSTILE_ENV");
    }
    cmd.arg(p.dir.join("plugin.c"))
        .arg(sdk.join("sonde.c"))
        .arg(sdk.join("sonde_alloc.c"))
        .arg(bindings.join("metric_collector.c"))
        .arg(bindings.join("metric_collector_component_type.o"))
        .arg("-o")
        .arg(&core);
    run(&mut cmd, "clang")?;
    std::fs::read(&core).with_context(|| format!("reading {}", core.display()))
}

/// The SDKs' own unit tests, run natively (seconds): Python's with
/// `unittest` over the bindings componentize-py generates, JavaScript's with
/// `node --test` (a module hook stands in for the host import), C's compiled
/// by clang for this machine against the header `wit-bindgen c` generates.
pub(crate) fn sdk_tests(root: &Path) -> Result<()> {
    let tools = ensure_toolchains(root, &Lang::ALL)?;
    let work = root.join("target/lang-build/sdk-tests");
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work)?;
    let wit = root.join("wit");

    let bindings = work.join("python");
    let py = tools.componentize_py.as_ref().context("componentize-py")?;
    run(
        Command::new(py)
            .arg("-d")
            .arg(&wit)
            .args(["-w", "metric-collector", "bindings"])
            .arg(&bindings),
        "componentize-py bindings",
    )?;
    let python = py.with_file_name("python");
    let mut path = std::ffi::OsString::from(bindings.as_os_str());
    path.push(":");
    path.push(root.join("sdk/python"));
    eprintln!("+ python -m unittest (sdk/python/tests)");
    run(
        Command::new(python)
            .args(["-m", "unittest", "discover", "-s"])
            .arg(root.join("sdk/python/tests"))
            .env("PYTHONPATH", path)
            .env("PYTHONDONTWRITEBYTECODE", "1"),
        "the Python SDK's tests",
    )?;

    eprintln!("+ node --test sdk/js/test/sonde.test.js");
    run(
        Command::new("node")
            .args(["--import", "./sdk/js/test/register.mjs", "--test", "sdk/js/test/sonde.test.js"])
            .current_dir(root),
        "the JavaScript SDK's tests",
    )?;

    let c = work.join("c");
    let wit_bindgen = tools.wit_bindgen.as_ref().context("wit-bindgen")?;
    run(
        Command::new(wit_bindgen)
            .arg("c")
            .arg(&wit)
            .args(["--world", "metric-collector", "--out-dir"])
            .arg(&c),
        "wit-bindgen c",
    )?;
    let exe = c.join("sonde_test");
    eprintln!("+ clang sdk/c/test/sonde_test.c && run it");
    run(
        Command::new(CLANG)
            .args(["-std=c11", "-Wall", "-Wextra", "-Werror", "-Wno-unused-parameter", "-I"])
            .arg(root.join("sdk/c"))
            .arg("-I")
            .arg(&c)
            .arg(root.join("sdk/c/sonde.c"))
            .arg(root.join("sdk/c/test/sonde_test.c"))
            .args(["-lm", "-o"])
            .arg(&exe),
        "clang (the C SDK's tests)",
    )?;
    run(&mut Command::new(&exe), "the C SDK's tests")?;
    println!("SDK tests: Python, JavaScript and C all pass");
    Ok(())
}
