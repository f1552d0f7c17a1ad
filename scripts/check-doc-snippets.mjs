#!/usr/bin/env node
// Type-checks every ```ts block of README.md and docs/*.md against the BUILT package (dist/, run
// `npm run build` first), the way an application sees it: through the package name and its
// `exports`, with the strict, skipLibCheck: false options of test/types/tsconfig.json (unused
// locals allowed: a snippet may declare a value only to show it).
//
// Each block becomes its own module in a temporary folder under test/types/. A block may leave
// out the imports of names it uses from the package, NestJS, @nestjs/config, @nestjs/terminus,
// ioredis and express-session: they are added when the compiler reports the name missing (a
// global of the same name, such as fetch's `Request`, is not replaced: import it). Names that
// belong to the reader's application (`AppModule`, `UsersService`, ...) are declared in
// test/docs/app-placeholders.d.ts. A block whose info string has `nocheck` (```ts nocheck) is
// skipped: keep that for shell-like pseudo-code.
//
//   node scripts/check-doc-snippets.mjs            every block; exit 1 if any fails to compile
//   node scripts/check-doc-snippets.mjs --keep     leave the generated files for inspection
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';

import ts from 'typescript';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const { values: args } = parseArgs({ options: { keep: { type: 'boolean', default: false } } });

// Where a missing name is imported from; the first module exporting it wins.
const IMPORT_SOURCES = [
  'nestjs-redis-infra',
  'nestjs-redis-infra/express-session',
  '@nestjs/common',
  '@nestjs/core',
  '@nestjs/config',
  '@nestjs/terminus',
  'ioredis',
];
// Default imports, by local name.
const DEFAULT_IMPORTS = { session: 'express-session' };

/** The ```ts blocks of one Markdown file, with the line of their first code line. */
function extractBlocks(file) {
  const lines = fs.readFileSync(file, 'utf8').split('\n');
  const blocks = [];
  let open = null;
  lines.forEach((line, i) => {
    const fence = /^(\s*)```\s*(\S*)\s*(.*)$/.exec(line);
    if (!fence) {
      if (open) open.lines.push(line.slice(Math.min(open.indent, /^\s*/.exec(line)[0].length)));
      return;
    }
    if (open) {
      blocks.push(open);
      open = null;
    } else {
      const [, indent, lang, info] = fence;
      open = {
        file: path.relative(root, file),
        line: i + 2,
        indent: indent.length,
        lines: [],
        check: ['ts', 'typescript'].includes(lang) && !/\bnocheck\b/.test(info),
        lang,
      };
    }
  });
  return blocks.filter((b) => b.check);
}

const docs = [path.join(root, 'README.md')];
const docsDir = path.join(root, 'docs');
if (fs.existsSync(docsDir)) {
  for (const name of fs.readdirSync(docsDir).sort()) {
    if (name.endsWith('.md')) docs.push(path.join(docsDir, name));
  }
}
const blocks = docs.flatMap(extractBlocks);

const configPath = path.join(root, 'test/types/tsconfig.json');
const config = ts.getParsedCommandLineOfConfigFile(
  configPath,
  {},
  {
    ...ts.sys,
    onUnRecoverableConfigFileDiagnostic: (d) => {
      throw new Error(ts.flattenDiagnosticMessageText(d.messageText, '\n'));
    },
  },
);
// A snippet shows one step: a value it declares for the reader may go unused.
const options = {
  ...config.options,
  noEmit: true,
  noUnusedLocals: false,
  noUnusedParameters: false,
};

// Inside the repository, so that `nestjs-redis-infra` resolves to this package's own exports
// (self-reference) and everything else to its node_modules. Ignored by git through its own file.
const dir = fs.mkdtempSync(path.join(root, 'test/types/.snippets-'));
fs.writeFileSync(path.join(dir, '.gitignore'), '*\n');
const placeholders = path.join(root, 'test/docs/app-placeholders.d.ts');

/** Every name each import source exports, resolved by the compiler from the built package. */
function exportedNames() {
  const probe = path.join(dir, 'probe.ts');
  fs.writeFileSync(
    probe,
    IMPORT_SOURCES.map((m, i) => `import * as m${i} from '${m}';`).join('\n') + '\nexport {};\n',
  );
  const program = ts.createProgram([probe], options);
  const checker = program.getTypeChecker();
  const source = program.getSourceFile(probe);
  const names = new Map();
  source.statements.filter(ts.isImportDeclaration).forEach((statement, i) => {
    const symbol = checker.getSymbolAtLocation(statement.moduleSpecifier);
    if (!symbol) throw new Error(`cannot resolve '${IMPORT_SOURCES[i]}': run the build first`);
    for (const exported of checker.getExportsOfModule(symbol)) {
      if (!names.has(exported.name)) names.set(exported.name, IMPORT_SOURCES[i]);
    }
  });
  fs.rmSync(probe);
  return names;
}

function write(block, imports) {
  // All added imports on the first line, so that line N of the file is line N - 1 of the block.
  const header = [...imports].map((name) =>
    Object.hasOwn(DEFAULT_IMPORTS, name)
      ? `import ${name} from '${DEFAULT_IMPORTS[name]}';`
      : `import { ${name} } from '${block.sources.get(name)}';`,
  );
  fs.writeFileSync(block.path, `${header.join(' ')}\n${block.lines.join('\n')}\nexport {};\n`);
}

let previous;
function diagnose() {
  // The second pass reuses the first one's unchanged files (the package, NestJS, ioredis).
  previous = ts.createProgram(
    [...blocks.map((b) => b.path), placeholders],
    options,
    undefined,
    previous,
  );
  return ts.getPreEmitDiagnostics(previous);
}

let failed = 0;
try {
  const sources = exportedNames();
  blocks.forEach((block, i) => {
    const base = `${block.file.replace(/[^\w]+/g, '_')}_L${block.line}`;
    block.path = path.join(dir, `${String(i).padStart(3, '0')}_${base}.ts`);
    block.imports = new Set();
    block.sources = sources;
    write(block, block.imports);
  });
  // First pass: find the names each block uses without importing; second: check with them.
  const missing = /^Cannot find name '([$\w]+)'/;
  for (const d of diagnose()) {
    const block = blocks.find((b) => d.file && path.resolve(d.file.fileName) === b.path);
    const name = missing.exec(ts.flattenDiagnosticMessageText(d.messageText, '\n'))?.[1];
    if (block && name && (sources.has(name) || Object.hasOwn(DEFAULT_IMPORTS, name))) {
      block.imports.add(name);
    }
  }
  for (const block of blocks) write(block, block.imports);
  const errors = new Map();
  for (const d of diagnose()) {
    const block = d.file && blocks.find((b) => path.resolve(d.file.fileName) === b.path);
    const message = ts.flattenDiagnosticMessageText(d.messageText, '\n  ');
    if (!block) {
      console.error(`error outside the snippets: ${d.file?.fileName ?? ''} ${message}`);
      failed++;
      continue;
    }
    const { line } = d.file.getLineAndCharacterOfPosition(d.start ?? 0);
    const where = `${block.file}:${block.line + line - 1}`;
    errors.set(block, [...(errors.get(block) ?? []), `  ${where}: TS${d.code} ${message}`]);
  }
  for (const block of blocks) {
    const found = errors.get(block);
    if (!found) continue;
    failed++;
    console.error(`\n${block.file}:${block.line} does not compile:\n${found.join('\n')}`);
  }
  console.log(
    `doc snippets: ${blocks.length - failed} passed, ${failed} failed (${docs.map((d) => path.relative(root, d)).join(', ')})`,
  );
} finally {
  if (args.keep) console.log(`generated files kept in ${path.relative(root, dir)}`);
  else fs.rmSync(dir, { recursive: true, force: true });
}
process.exitCode = failed ? 1 : 0;
