//! `scripts/setup` on machines it has not seen: its libclang check must find what bindgen
//! loads, and only that (a fake directory tree stands in for the machine).

use std::path::{Path, PathBuf};
use std::process::Command;

fn find_libclang(root: &Path) -> Option<String> {
    let out = Command::new("bash")
        .arg(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("scripts/setup"))
        .arg("--find-libclang")
        .env("CORRAL_SETUP_ROOT", root)
        .env_remove("LIBCLANG_PATH")
        .output()
        .expect("bash runs scripts/setup");
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

fn fake_root(name: &str) -> PathBuf {
    let root = std::env::temp_dir().join(format!("corral-setup-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    std::fs::create_dir_all(&root).unwrap();
    root
}

fn touch(root: &Path, path: &str) -> PathBuf {
    let p = root.join(path.trim_start_matches('/'));
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(&p, b"").unwrap();
    p
}

#[test]
fn libclang_cpp_alone_is_not_libclang() {
    // A Debian 12 Rust image with LLVM: libclang-cpp14 and libLLVM, no libclang-dev.
    let root = fake_root("cpp");
    touch(&root, "/usr/lib/llvm-14/lib/libclang-cpp.so.14");
    touch(&root, "/usr/lib/x86_64-linux-gnu/libclang-cpp.so.14");
    touch(&root, "/usr/lib/llvm-14/lib/libLLVM-14.so");
    assert_eq!(
        find_libclang(&root),
        None,
        "libclang-cpp is not what bindgen loads"
    );
    std::fs::remove_dir_all(&root).unwrap();
}

#[test]
fn every_name_bindgen_loads_is_found() {
    for path in [
        "/usr/lib/llvm-14/lib/libclang.so",
        "/usr/lib/llvm-14/lib/libclang.so.1",
        "/usr/lib/x86_64-linux-gnu/libclang-14.so.14",
        "/usr/lib/x86_64-linux-gnu/libclang-16.so",
        "/usr/local/lib/libclang.so",
        "/usr/local/llvm18/lib/libclang.so.18.1",
    ] {
        let root = fake_root("one");
        touch(&root, "/usr/lib/llvm-14/lib/libclang-cpp.so.14");
        let file = touch(&root, path);
        assert_eq!(
            find_libclang(&root).as_deref(),
            Some(file.to_str().unwrap()),
            "{path}"
        );
        std::fs::remove_dir_all(&root).unwrap();
    }
}
