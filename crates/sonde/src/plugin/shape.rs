//! The shape of a plugin's code, checked before the compiler sees it.
//!
//! Cranelift's time and memory grow faster than linearly in some shapes of
//! valid WebAssembly: a 26 KB function of deeply nested blocks over
//! thousands of locals took it 270 s and 776 MB. Compilation itself runs in
//! a child process under a budget (`compile.rs`); this walk refuses, in a
//! single linear pass over the bytes, any component whose shape is past what
//! real collectors need, naming the limit. Real large collectors measured
//! here (a minimal collector for our WIT, built with componentize-py 0.25.1:
//! 17.5 MiB, and componentize-js 0.23.0: 11.5 MiB): at most 38 core modules,
//! 110 instances, 1 memory, 2 tables, 13,486 functions, a 427 KB body, 271
//! locals, blocks nested 781 deep, loops 6 deep, locals² × loop depth
//! 220,323; the walk takes 0.07-0.14 s. Every limit below has a margin of
//! 2.6 (modules) or more over them.

use wasmparser::{Encoding, Operator, Parser, Payload};

/// Core modules in one component (nested components included). A Rust
/// collector has 2-4 (the module, its adapter shims); a Python one built
/// with componentize-py 14, or 38 with WASI stubbed out.
pub(crate) const MAX_MODULES: usize = 100;
/// Core and component instances a component may create.
pub(crate) const MAX_INSTANCES: usize = 1_000;
/// Linear memories defined across all modules. The memory cap covers all of
/// them together; the count keeps the per-memory overhead (a reservation
/// and guard pages each) small.
pub(crate) const MAX_MEMORIES: usize = 16;
/// Tables defined across all modules.
pub(crate) const MAX_TABLES: usize = 100;
/// Functions defined across all modules: a Python collector (CPython) has
/// 13,400, a JavaScript one (SpiderMonkey) 12,700.
pub(crate) const MAX_FUNCTIONS: usize = 200_000;
/// Bytes of one function body. The largest in a Python collector (CPython's
/// interpreter loop) is 427 KB.
pub(crate) const MAX_FUNCTION_BYTES: usize = 2 << 20;
/// Locals of one function (the validator's own limit is 50,000).
pub(crate) const MAX_LOCALS: u64 = 50_000;
/// Nesting depth of blocks, loops and ifs in one function. A `switch` of n
/// cases compiles to n nested blocks, so interpreters nest a few hundred
/// deep; nested blocks alone are cheap to compile (3,000 deep over 3,000
/// locals: 43 ms).
pub(crate) const MAX_NESTING: usize = 5_000;
/// Locals squared times the depth of nested loops, in one function: the
/// shape that makes Cranelift slow. Every local live into a loop whose back
/// edge is not yet seen becomes a parameter of that loop's header, and of
/// each enclosing one; register allocation then works on all of them.
/// Measured here (debug build, in-process): 1,000 locals in loops nested
/// 200 deep, 1.3 s; 2,000 locals, 4.8 s; the time grows with locals² ×
/// depth (about 6 ns per unit). Real code nests loops a few deep. At this
/// limit one function compiles in about 6 s (debug) or 1-2 s (release);
/// more of them are what the compile budget is for.
pub(crate) const MAX_LOOP_COMPLEXITY: u64 = 1_000_000_000;

/// What the walk counted, for the operator and for tests.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Shape {
    pub(crate) modules: usize,
    pub(crate) instances: usize,
    pub(crate) memories: usize,
    pub(crate) tables: usize,
    pub(crate) functions: usize,
    pub(crate) largest_function: usize,
    pub(crate) most_locals: u64,
    pub(crate) deepest_nesting: usize,
    pub(crate) deepest_loops: usize,
}

fn over(what: &str, n: impl std::fmt::Display, max: impl std::fmt::Display) -> String {
    format!("its code is too complex to compile safely: {what} {n}, at most {max}")
}

/// Walks `wasm` (a component) and checks it against the limits above; the
/// error names the limit and, for a function, its index.
pub(crate) fn check(wasm: &[u8]) -> Result<Shape, String> {
    let mut s = Shape::default();
    // Function bodies are numbered per module, from its first defined one.
    let mut body_index = 0usize;
    for payload in Parser::new(0).parse_all(wasm) {
        let payload = payload.map_err(|e| format!("is not a valid component: {e}"))?;
        match payload {
            Payload::Version { encoding: Encoding::Module, .. } => {
                s.modules += 1;
                body_index = 0;
                if s.modules > MAX_MODULES {
                    return Err(over("core modules", s.modules, MAX_MODULES));
                }
            }
            Payload::InstanceSection(r) => s.instances += r.count() as usize,
            Payload::ComponentInstanceSection(r) => s.instances += r.count() as usize,
            Payload::MemorySection(r) => s.memories += r.count() as usize,
            Payload::TableSection(r) => s.tables += r.count() as usize,
            Payload::FunctionSection(r) => s.functions += r.count() as usize,
            Payload::CodeSectionEntry(body) => {
                let at = body_index;
                body_index += 1;
                let size = body.range().len();
                s.largest_function = s.largest_function.max(size);
                if size > MAX_FUNCTION_BYTES {
                    return Err(over(
                        &format!("function {at} has bytes:"),
                        size,
                        MAX_FUNCTION_BYTES,
                    ));
                }
                let mut locals = 0u64;
                for local in body.get_locals_reader().map_err(invalid)? {
                    locals += u64::from(local.map_err(invalid)?.0);
                }
                s.most_locals = s.most_locals.max(locals);
                if locals > MAX_LOCALS {
                    return Err(over(&format!("function {at} has locals:"), locals, MAX_LOCALS));
                }
                let (depth, loops) = nesting(body.get_operators_reader().map_err(invalid)?)?;
                s.deepest_nesting = s.deepest_nesting.max(depth);
                s.deepest_loops = s.deepest_loops.max(loops);
                if depth > MAX_NESTING {
                    return Err(over(&format!("function {at} nests blocks"), depth, MAX_NESTING));
                }
                let complexity = locals.saturating_mul(locals).saturating_mul(loops as u64);
                if complexity > MAX_LOOP_COMPLEXITY {
                    return Err(over(
                        &format!(
                            "function {at} has {locals} locals in loops nested {loops} deep, locals² × depth ="
                        ),
                        complexity,
                        MAX_LOOP_COMPLEXITY,
                    ));
                }
            }
            _ => {}
        }
        for (what, n, max) in [
            ("instances", s.instances, MAX_INSTANCES),
            ("memories", s.memories, MAX_MEMORIES),
            ("tables", s.tables, MAX_TABLES),
            ("functions", s.functions, MAX_FUNCTIONS),
        ] {
            if n > max {
                return Err(over(what, n, max));
            }
        }
    }
    Ok(s)
}

fn invalid(e: wasmparser::BinaryReaderError) -> String {
    format!("is not a valid component: {e}")
}

/// The deepest nesting of blocks (of any kind), and of loops, in one
/// function body.
fn nesting(ops: wasmparser::OperatorsReader<'_>) -> Result<(usize, usize), String> {
    // One flag per open block: whether it is a loop.
    let mut open: Vec<bool> = Vec::new();
    let (mut deepest, mut loops, mut deepest_loops) = (0usize, 0usize, 0usize);
    for op in ops {
        match op.map_err(invalid)? {
            Operator::Loop { .. } => {
                open.push(true);
                loops += 1;
                deepest_loops = deepest_loops.max(loops);
            }
            Operator::Block { .. }
            | Operator::If { .. }
            | Operator::TryTable { .. }
            | Operator::Try { .. } => open.push(false),
            Operator::End if open.pop() == Some(true) => loops -= 1,
            _ => {}
        }
        deepest = deepest.max(open.len());
        if open.len() > MAX_NESTING {
            break;
        }
    }
    Ok((deepest, deepest_loops))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "tests")]
pub(crate) mod tests {
    use super::*;

    /// A component holding one core module with one function of `locals`
    /// locals inside blocks nested `depth` deep, each touching a local.
    pub(crate) fn nested(locals: u32, depth: usize) -> Vec<u8> {
        let mut body = String::new();
        for i in 0..depth {
            body.push_str(&format!("(block (local.set {} (i32.const {i}))", i as u32 % locals));
        }
        body.push_str(&")".repeat(depth));
        let wat = format!(
            "(component (core module (func (local {}) {body})))",
            "i32 ".repeat(locals as usize)
        );
        wat::parse_str(wat).expect("valid wat")
    }

    /// Nested `kind`s (`loop` or `block`) `depth` deep over `locals` locals;
    /// the innermost level reads every local and writes one.
    pub(crate) fn bomb(locals: u32, depth: usize, kind: &str) -> Vec<u8> {
        let mut body = String::new();
        for _ in 0..depth {
            body.push_str(&format!("({kind} "));
        }
        body.push_str("(local.set 0 (i32.const 0)");
        for l in 0..locals {
            body.push_str(&format!("(local.set 0 (i32.add (local.get 0) (local.get {l})))"));
        }
        body.push_str("(br_if 0 (local.get 0)))");
        body.push_str(&")".repeat(depth));
        let wat = format!(
            "(component (core module (func (local {}) {body})))",
            "i32 ".repeat(locals as usize)
        );
        wat::parse_str(wat).expect("valid wat")
    }

    #[test]
    fn a_modest_function_passes_and_is_measured() {
        let s = check(&nested(10, 5)).expect("within the limits");
        assert_eq!((s.modules, s.functions, s.most_locals, s.deepest_nesting), (1, 1, 10, 5));
        let s = check(&bomb(100, 7, "loop")).expect("within the limits");
        assert_eq!((s.most_locals, s.deepest_nesting, s.deepest_loops), (100, 7, 7));
    }

    #[test]
    fn each_limit_refuses_with_its_name() {
        let deep = check(&nested(1, MAX_NESTING + 1)).unwrap_err();
        assert!(deep.contains("nests blocks"), "{deep}");
        let locals = check(&nested(MAX_LOCALS as u32 + 1, 1)).unwrap_err();
        assert!(locals.contains("has locals"), "{locals}");
        // Deep blocks over many locals are cheap: allowed.
        check(&nested(5_000, 1_000)).expect("blocks are cheap");
        // The same shape in loops is the slow one (about 270 s here).
        let loops = check(&bomb(3_000, 500, "loop")).unwrap_err();
        assert!(loops.contains("3000 locals in loops nested 500 deep"), "{loops}");
        let memories = "(memory 1) ".repeat(MAX_MEMORIES + 1);
        let wasm = wat::parse_str(format!("(component (core module {memories}))")).unwrap();
        assert!(check(&wasm).unwrap_err().contains("memories 17, at most 16"));
        let modules = "(core module) ".repeat(MAX_MODULES + 1);
        let wasm = wat::parse_str(format!("(component {modules})")).unwrap();
        assert!(check(&wasm).unwrap_err().contains("core modules"));
        assert!(check(b"\0asm\x0d\0\x01\0garbage").unwrap_err().starts_with("is not a valid"));
    }
}
