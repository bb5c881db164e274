//! Cheap checks of what the Debian package is built from (`[package.metadata.deb]`
//! in Cargo.toml, dist/). Building the package and running lintian on it is
//! scripts/package-deb, which is not part of the suite (a release build and
//! cargo-deb's install cost more than the rest of the suite).

use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(path: &str) -> String {
    std::fs::read_to_string(root().join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn deb_metadata() -> toml::Table {
    let manifest: toml::Table = toml::from_str(&read("Cargo.toml")).unwrap();
    manifest["package"]["metadata"]["deb"]
        .as_table()
        .expect("[package.metadata.deb]")
        .clone()
}

#[test]
fn the_changelog_is_at_the_crate_version() {
    // lintian checks the changelog's form; only this checks its version, and a
    // package whose changelog lags behind Cargo.toml is refused by
    // scripts/package-deb.
    let changelog = read("dist/changelog");
    let first = changelog.lines().next().unwrap();
    let version = first
        .strip_prefix("alternator-dns (")
        .and_then(|rest| rest.split_once(')'))
        .map(|(version, _)| version)
        .unwrap_or_else(|| panic!("dist/changelog starts with {first:?}"));
    assert_eq!(
        version,
        env!("CARGO_PKG_VERSION"),
        "add a dist/changelog entry for the new version"
    );
}

#[test]
fn the_unit_pins_no_cpu() {
    // A CPUAffinity= naming a CPU the machine lacks keeps the unit from
    // starting; pinning is the config's `cpus` (and a drop-in, if wanted).
    let unit = read("dist/alternator-dns.service");
    let pinned: Vec<&str> = unit
        .lines()
        .map(str::trim_start)
        .filter(|l| l.starts_with("CPUAffinity") || l.starts_with("NUMAMask"))
        .collect();
    assert!(pinned.is_empty(), "the unit pins: {pinned:?}");
}

#[test]
fn every_asset_exists_or_is_generated_by_package_deb() {
    let deb = deb_metadata();
    let script = read("scripts/package-deb");
    for asset in deb["assets"].as_array().unwrap() {
        let source = asset.as_array().unwrap()[0].as_str().unwrap();
        if source.starts_with("target/release/") {
            continue; // built by cargo
        }
        if let Some(file) = source.strip_prefix("target/package-deb/") {
            let name = file.replace("alternator-dns", "$name");
            assert!(
                script.contains(&format!("\"$gen/{name}\"")),
                "scripts/package-deb does not write {source}"
            );
            continue;
        }
        assert!(root().join(source).is_file(), "{source} is missing");
    }
}

#[test]
fn the_unit_gets_the_generated_maintainer_scripts() {
    // cargo-deb writes the standard systemd maintainer scripts only when
    // `maintainer-scripts` names a directory; one of our own there would
    // replace them.
    let deb = deb_metadata();
    let scripts = Path::new(deb["maintainer-scripts"].as_str().unwrap());
    let units = deb["systemd-units"]["unit-scripts"].as_str().unwrap();
    assert!(root().join(units).join("alternator-dns.service").is_file());
    for name in ["preinst", "postinst", "prerm", "postrm"] {
        assert!(
            !root().join(scripts).join(name).exists(),
            "{} replaces cargo-deb's {name}",
            scripts.join(name).display()
        );
    }
    assert_eq!(deb["systemd-units"]["enable"].as_bool(), Some(false));
    assert_eq!(deb["systemd-units"]["start"].as_bool(), Some(false));
}
