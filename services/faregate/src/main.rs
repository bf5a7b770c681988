//! The `faregate` binary: parse the command line and hand over to the library.

/// mimalloc instead of glibc's malloc: the request path allocates many small short-lived
/// objects, and glibc's malloc (with its `malloc_consolidate` passes) measured at about 7% of
/// the ingress's CPU per request. See docs/benchmarks.md (ingress).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    faregate::main()
}
