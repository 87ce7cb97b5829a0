use super::*;

const INTERP: &str = "/lib64/ld-linux-x86-64.so.2";

/// These tests read the host's own binaries (Debian x86-64, as in CI).
fn host_is_debian_x86_64() -> bool {
    let ok = Path::new(INTERP).exists() && Path::new("/bin/true").exists();
    if !ok {
        eprintln!("skipping: no x86-64 glibc userland here");
    }
    ok
}

fn program(src: &str) -> Program {
    Program {
        src: src.into(),
        dest: None,
    }
}

fn find<'a>(items: &'a [Item], dest: &str) -> &'a Item {
    items
        .iter()
        .find(|i| i.dest == dest)
        .unwrap_or_else(|| panic!("{dest} missing from {items:#?}"))
}

/// A 64-byte ELF64 header with no program or section headers: the shape of
/// a static binary as far as loading goes.
fn static_elf() -> Vec<u8> {
    let mut h = vec![0u8; 64];
    h[..4].copy_from_slice(b"\x7fELF");
    h[4] = 2; // ELFCLASS64
    h[5] = 1; // little endian
    h[6] = 1; // EV_CURRENT
    h[16] = 2; // ET_EXEC
    h[18] = 62; // EM_X86_64
    h[20] = 1; // e_version
    h[52] = 64; // e_ehsize
    h
}

#[test]
fn cleans_initramfs_paths() {
    assert_eq!(clean("/a/./b/../c"), "/a/c");
    assert_eq!(clean("lib//x"), "/lib/x");
    assert_eq!(clean("/../x"), "/x");
}

#[test]
fn static_programs_need_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("agent");
    std::fs::write(&path, static_elf()).unwrap();
    let items = resolve(
        Path::new("/nonexistent"),
        &[program(path.to_str().unwrap())],
    )
    .unwrap();
    assert_eq!(items.len(), 1);
    assert_eq!(items[0].dest, "/bin/agent");
    assert!(items[0].is_program);
}

#[test]
fn non_elf_programs_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("script");
    std::fs::write(&path, "#!/bin/sh\necho hi\n").unwrap();
    let err = resolve(Path::new("/"), &[program(path.to_str().unwrap())]).unwrap_err();
    assert!(
        err.to_string()
            .ends_with("script: not an ELF file (ship other files with `files`)"),
        "{err}"
    );
}

#[test]
fn ls_brings_libc_and_the_interpreter() {
    if !host_is_debian_x86_64() {
        return;
    }
    let items = resolve(Path::new("/"), &[program("/bin/ls")]).unwrap();
    assert!(find(&items, "/bin/ls").is_program);
    let libc = find(&items, "/lib/x86_64-linux-gnu/libc.so.6");
    assert!(!libc.is_program);
    match &libc.source {
        Source::File { data, .. } => {
            assert_eq!(&data[..4], b"\x7fELF");
            assert_eq!(
                *data,
                std::fs::read("/lib/x86_64-linux-gnu/libc.so.6").unwrap()
            );
        }
        other => panic!("libc should be a copy: {other:?}"),
    }
    assert!(matches!(find(&items, INTERP).source, Source::File { .. }));
    // ls also names ld-linux in DT_NEEDED: found in the multiarch dir, it is
    // the same file as the interpreter, so it becomes a link.
    assert_eq!(
        find(&items, "/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2").source,
        Source::Link(INTERP.into())
    );
    let dests: std::collections::HashSet<&str> = items.iter().map(|i| i.dest.as_str()).collect();
    assert_eq!(dests.len(), items.len(), "no dest twice");
}

#[test]
fn two_programs_share_libraries_and_may_be_renamed() {
    if !host_is_debian_x86_64() {
        return;
    }
    let renamed = Program {
        src: "/bin/true".into(),
        dest: Some("/sbin/yes-really".into()),
    };
    let items = resolve(Path::new("/"), &[program("/bin/ls"), renamed]).unwrap();
    assert!(find(&items, "/sbin/yes-really").is_program);
    assert_eq!(
        items
            .iter()
            .filter(|i| i.dest.ends_with("/libc.so.6"))
            .count(),
        1
    );

    let clash = Program {
        src: "/bin/false".into(),
        dest: Some("/bin/true".into()),
    };
    let err = resolve(Path::new("/"), &[program("/bin/true"), clash]).unwrap_err();
    assert!(
        matches!(&err, Error::Conflict { dest, .. } if dest == "/bin/true"),
        "{err}"
    );
}

#[test]
fn sysroot_symlinks_and_wrong_class_libraries() {
    if !host_is_debian_x86_64() {
        return;
    }
    // A sysroot whose first search dir holds a 32-bit libc.so.6 (skipped)
    // and whose interpreter is an absolute symlink (resolved in the sysroot).
    let root = tempfile::tempdir().unwrap();
    let at = |p: &str| root.path().join(p);
    for dir in [
        "lib/x86_64-linux-gnu",
        "usr/lib/x86_64-linux-gnu",
        "lib64",
        "real",
    ] {
        std::fs::create_dir_all(at(dir)).unwrap();
    }
    let mut elf32 = static_elf();
    elf32[4] = 1; // ELFCLASS32
    elf32[18] = 3; // EM_386
    std::fs::write(at("lib/x86_64-linux-gnu/libc.so.6"), elf32).unwrap();
    std::fs::copy(
        "/lib/x86_64-linux-gnu/libc.so.6",
        at("usr/lib/x86_64-linux-gnu/libc.so.6"),
    )
    .unwrap();
    std::fs::copy(INTERP, at("real/ld.so")).unwrap();
    std::os::unix::fs::symlink("/real/ld.so", at("lib64/ld-linux-x86-64.so.2")).unwrap();

    let items = resolve(root.path(), &[program("/bin/true")]).unwrap();
    let dests: Vec<&str> = items.iter().map(|i| i.dest.as_str()).collect();
    assert_eq!(
        dests,
        ["/bin/true", INTERP, "/usr/lib/x86_64-linux-gnu/libc.so.6"]
    );
    match &find(&items, INTERP).source {
        Source::File { path, .. } => assert_eq!(*path, at("lib64/ld-linux-x86-64.so.2")),
        other => panic!("{other:?}"),
    }

    // Without libc the error names the library, its user and the search.
    std::fs::remove_file(at("usr/lib/x86_64-linux-gnu/libc.so.6")).unwrap();
    let err = resolve(root.path(), &[program("/bin/true")]).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "library libc.so.6 needed by /bin/true: not found in {}",
            LIBRARY_DIRS.join(", ")
        )
    );
}
