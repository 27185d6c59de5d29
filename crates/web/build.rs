//! Bundles the watch page's player: `player/player.js` and hls.js (an npm dependency pinned by
//! `player/package-lock.json`) into one ES module with esbuild, embedded in the binary as
//! `/assets/player.js`.
//!
//! The bundle is built from the lockfile on every clean build, never committed: what ships is
//! exactly the pinned hls.js, and updating it is a lockfile change. npm runs in `OUT_DIR`, so the
//! source tree is never written to. It needs Node.js and npm (Debian: `apt-get install nodejs
//! npm`) and the npm registry, or its cache (`~/.npm`), on the first build.

use std::env;
use std::fs;
use std::path::PathBuf;
use std::process::Command;

const SOURCES: [&str; 3] = ["package.json", "package-lock.json", "player.js"];

fn main() {
    let manifest_dir =
        PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let work = out_dir.join("player");
    fs::create_dir_all(&work)
        .unwrap_or_else(|error| panic!("creating {}: {error}", work.display()));
    for name in SOURCES {
        println!("cargo:rerun-if-changed=player/{name}");
        let from = manifest_dir.join("player").join(name);
        fs::copy(&from, work.join(name))
            .unwrap_or_else(|error| panic!("copying {}: {error}", from.display()));
    }
    println!("cargo:rerun-if-env-changed=NPM");

    let npm = env::var("NPM").unwrap_or_else(|_| "npm".to_owned());
    run(
        Command::new(&npm)
            .args(["ci", "--no-audit", "--no-fund", "--loglevel=error"])
            .current_dir(&work),
        &format!(
            "{npm} ci (building the web player needs Node.js and npm: apt-get install nodejs npm)"
        ),
    );
    let bundle = out_dir.join("player.bundle.js");
    run(
        Command::new(work.join("node_modules/.bin/esbuild"))
            .arg("player.js")
            .args([
                "--bundle",
                "--format=esm",
                "--minify",
                "--target=es2020",
                "--legal-comments=eof",
            ])
            .arg(format!("--outfile={}", bundle.display()))
            .current_dir(&work),
        "esbuild",
    );
}

fn run(command: &mut Command, what: &str) {
    let status = command
        .status()
        .unwrap_or_else(|error| panic!("running {what}: {error}"));
    assert!(status.success(), "{what} failed: {status}");
}
