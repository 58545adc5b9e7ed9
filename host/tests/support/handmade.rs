//! Plugin components written by hand in the tests, for what no toolchain
//! makes on purpose: a reset plugin whose core module defines many memories.
//! The core module is encoded with `wasm-encoder` and wrapped into a
//! `lila:hooks@0.1.0` component with `wit-component`, as `cargo component`
//! or `wasm-tools component new` would.

// Test binaries include this file for some of its helpers only.
#![allow(dead_code)]

use wasm_encoder::{
    CodeSection, ConstExpr, ExportKind, ExportSection, Function, FunctionSection, GlobalSection,
    GlobalType, Instruction, MemorySection, MemoryType, Module, TypeSection, ValType,
};

use super::wasm::workspace_dir;

/// A `lila:hooks@0.1.0` reset plugin that allows every reset and does
/// nothing else, whose core module defines `memories` memories of
/// `pages_each` 64 KiB pages each (the first is the canonical ABI's).
pub fn reset_plugin_with_memories(memories: u32, pages_each: u64) -> Vec<u8> {
    reset_plugin(memories, pages_each, 0, 0)
}

/// The same plugin with one memory, and `functions` functions that are
/// never called, of `ops_each` arithmetic instructions each: as slow to
/// compile as it is big (the engine compiles every function).
pub fn reset_plugin_slow_to_compile(functions: u32, ops_each: u32) -> Vec<u8> {
    reset_plugin(1, 1, functions, ops_each)
}

fn reset_plugin(memories: u32, pages_each: u64, functions_count: u32, ops_each: u32) -> Vec<u8> {
    let mut module = Module::new();
    let mut types = TypeSection::new();
    // 0: before-clear (its context comes by pointer, its decision goes back by pointer).
    types.ty().function([ValType::I32], [ValType::I32]);
    // 1: after-clear.
    types.ty().function([ValType::I32], []);
    // 2: cabi_realloc(old, old_size, align, new_size) -> ptr.
    types.ty().function([ValType::I32; 4], [ValType::I32]);
    module.section(&types);
    let mut functions = FunctionSection::new();
    functions.function(0).function(1).function(2);
    for _ in 0..functions_count {
        functions.function(1);
    }
    module.section(&functions);
    let mut memory_section = MemorySection::new();
    for _ in 0..memories {
        memory_section.memory(MemoryType {
            minimum: pages_each,
            maximum: None,
            memory64: false,
            shared: false,
            page_size_log2: None,
        });
    }
    module.section(&memory_section);
    // The bump allocator's next free byte: what lies below 1024 stays zero.
    let mut globals = GlobalSection::new();
    globals.global(
        GlobalType {
            val_type: ValType::I32,
            mutable: true,
            shared: false,
        },
        &ConstExpr::i32_const(1024),
    );
    module.section(&globals);
    let mut exports = ExportSection::new();
    exports
        .export("memory", ExportKind::Memory, 0)
        .export("lila:hooks/reset@0.1.0#before-clear", ExportKind::Func, 0)
        .export("lila:hooks/reset@0.1.0#after-clear", ExportKind::Func, 1)
        .export("cabi_realloc", ExportKind::Func, 2);
    module.section(&exports);
    let mut code = CodeSection::new();
    // before-clear: the decision at address 0, all zero: `allow`.
    let mut before = Function::new([]);
    before.instruction(&Instruction::I32Const(0));
    before.instruction(&Instruction::End);
    code.function(&before);
    let mut after = Function::new([]);
    after.instruction(&Instruction::End);
    code.function(&after);
    // cabi_realloc: the next free byte, rounded up to 8, then moved past `new_size`.
    let mut realloc = Function::new([(1, ValType::I32)]);
    for instruction in [
        Instruction::GlobalGet(0),
        Instruction::I32Const(7),
        Instruction::I32Add,
        Instruction::I32Const(-8),
        Instruction::I32And,
        Instruction::LocalTee(4),
        Instruction::LocalGet(3),
        Instruction::I32Add,
        Instruction::GlobalSet(0),
        Instruction::LocalGet(4),
        Instruction::End,
    ] {
        realloc.instruction(&instruction);
    }
    code.function(&realloc);
    for f in 0..functions_count {
        // A chain of dependent operations, so none folds away.
        let mut body = Function::new([]);
        body.instruction(&Instruction::LocalGet(0));
        for op in 0..ops_each {
            body.instruction(&Instruction::I32Const((op ^ f) as i32));
            body.instruction(match op % 3 {
                0 => &Instruction::I32Add,
                1 => &Instruction::I32Mul,
                _ => &Instruction::I32Xor,
            });
        }
        body.instruction(&Instruction::Drop);
        body.instruction(&Instruction::End);
        code.function(&body);
    }
    module.section(&code);
    let mut bytes = module.finish();

    let mut resolve = wit_parser::Resolve::default();
    let (package, _) = resolve
        .push_dir(workspace_dir().join("wit/lila-hooks-0.1.0"))
        .expect("the 0.1.0 WIT parses");
    let world = resolve
        .select_world(&[package], Some("reset-hook"))
        .expect("the reset-hook world");
    wit_component::embed_component_metadata(
        &mut bytes,
        &resolve,
        world,
        wit_component::StringEncoding::UTF8,
        false,
    )
    .expect("embed the component type");
    wit_component::ComponentEncoder::default()
        .validate(true)
        .module(&bytes)
        .expect("a valid core module")
        .encode()
        .expect("a valid component")
}
