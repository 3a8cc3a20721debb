//! The README's code is code that compiles and runs: its "Using ddpm-core in your own Burn project"
//! snippet is `examples/readme_core.rs` (between its README markers), run here.

#[path = "../examples/readme_core.rs"]
mod snippet;

fn between<'a>(text: &'a str, begin: &str, end: &str) -> &'a str {
    let start = text.find(begin).unwrap_or_else(|| panic!("{begin:?} not found")) + begin.len();
    let stop = start + text[start..].find(end).unwrap_or_else(|| panic!("{end:?} not found"));
    &text[start..stop]
}

#[test]
fn the_readme_shows_the_example_that_runs() {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let example = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/examples/readme_core.rs")).unwrap();
    let section = between(&readme, "## Using ddpm-core in your own Burn project", "\n## ");
    let shown = between(section, "```rust\n", "```");
    let code = between(&example, "// README:begin\n", "// README:end");
    assert_eq!(shown, code, "README.md's snippet differs from examples/readme_core.rs; copy the example's code between its markers into the README");
    snippet::main().unwrap();
}
