//! Compiles every `kernels/cuda/*.cu` file as C++ against `shim.h` (one translation unit made
//! from `launch.cpp.in`), together with the emulation runtime `runtime.cpp`, into a static
//! library that `src/lib.rs` calls.
//!
//! Kernels are found by their `extern "C" __global__ void [__launch_bounds__(..)] NAME(`
//! declarations. A `.cu` file whose code (comments aside) calls `__syncthreads` has its
//! kernels run with one fiber per thread; the others run each thread as a plain call.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

fn main() {
    let crate_dir = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("CARGO_MANIFEST_DIR"));
    let cuda_dir = crate_dir.join("..").join("cuda");
    let out_dir = PathBuf::from(std::env::var("OUT_DIR").expect("OUT_DIR"));

    println!("cargo:rerun-if-changed={}", cuda_dir.display());
    for f in ["shim.h", "dispatch.h", "runtime.cpp", "launch.cpp.in"] {
        println!("cargo:rerun-if-changed={}", crate_dir.join(f).display());
    }

    let mut sources: Vec<PathBuf> = std::fs::read_dir(&cuda_dir)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", cuda_dir.display()))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "cu"))
        .collect();
    sources.sort();
    let common = cuda_dir.join("common.cuh");

    let mut includes = format!("#include \"{}\"\n", common.display());
    let mut entries = String::new();
    for path in &sources {
        println!("cargo:rerun-if-changed={}", path.display());
        let text = std::fs::read_to_string(path)
            .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
        let file = path.file_name().and_then(|f| f.to_str()).unwrap_or("?");
        let code = strip_comments(&text);
        let cooperative = code.contains("__syncthreads");
        writeln!(includes, "#include \"{}\"", path.display()).ok();
        for name in kernel_names(&code) {
            writeln!(entries, "    VP_KERNEL({name}, \"{file}\", {cooperative}),").ok();
        }
    }
    let template = std::fs::read_to_string(crate_dir.join("launch.cpp.in")).expect("launch.cpp.in");
    let generated = template
        .replace("@INCLUDES@", &includes)
        .replace("@ENTRIES@", &entries);
    let launch_cpp = out_dir.join("launch.cpp");
    write_if_changed(&launch_cpp, &generated);

    cc::Build::new()
        .cpp(true)
        .std("c++17")
        .opt_level(2)
        .debug(false)
        // The same rounding as the GPU build (NVRTC --fmad=false) and the Rust references.
        .flag("-ffp-contract=off")
        .flag_if_supported("-fno-fast-math")
        .flag_if_supported("-Wall")
        .flag_if_supported("-Wextra")
        .include(&crate_dir)
        .include(&cuda_dir)
        .file(&launch_cpp)
        .file(crate_dir.join("runtime.cpp"))
        .compile("vp_cuda_emu");
}

fn write_if_changed(path: &Path, text: &str) {
    if std::fs::read_to_string(path).ok().as_deref() != Some(text) {
        std::fs::write(path, text)
            .unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
    }
}

/// The text with `//` and `/* */` comments removed (string literals are not special-cased;
/// the kernels contain none that hold comment markers).
fn strip_comments(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while !rest.is_empty() {
        if let Some(r) = rest.strip_prefix("//") {
            rest = r.find('\n').map_or("", |i| &r[i..]);
        } else if let Some(r) = rest.strip_prefix("/*") {
            rest = r.find("*/").map_or("", |i| &r[i + 2..]);
        } else {
            let c = rest.chars().next().unwrap_or(' ');
            out.push(c);
            rest = &rest[c.len_utf8()..];
        }
    }
    out
}

/// Names declared as `extern "C" __global__ void [__launch_bounds__(...)] NAME(`.
fn kernel_names(code: &str) -> Vec<String> {
    let mut names = Vec::new();
    let marker = "extern \"C\" __global__";
    let mut rest = code;
    while let Some(i) = rest.find(marker) {
        rest = &rest[i + marker.len()..];
        let mut s = rest.trim_start();
        s = s.strip_prefix("void").unwrap_or(s).trim_start();
        if let Some(r) = s.strip_prefix("__launch_bounds__") {
            let mut depth = 0usize;
            let mut end = r.len();
            for (k, c) in r.char_indices() {
                match c {
                    '(' => depth += 1,
                    ')' => {
                        depth = depth.saturating_sub(1);
                        if depth == 0 {
                            end = k + 1;
                            break;
                        }
                    }
                    _ => {}
                }
            }
            s = r[end..].trim_start();
        }
        let name: String = s
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        if !name.is_empty() {
            names.push(name);
        }
    }
    names
}
