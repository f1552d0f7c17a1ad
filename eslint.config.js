// Lint gate, run first by `npm test` (scripts/test.sh): zero problems allowed; also `npm run lint`.
// TypeScript is linted with type information (typescript-eslint's recommendedTypeChecked) through
// the project service, which finds each file's nearest tsconfig.json. The .mjs/.js scripts have no
// tsconfig: they get the same rules without the type-aware ones.
import js from '@eslint/js';
import { createNodeResolver, importX } from 'eslint-plugin-import-x';
import globals from 'globals';
import tseslint from 'typescript-eslint';

export default tseslint.config(
  {
    ignores: [
      '**/node_modules/**',
      'dist/**',
      'coverage/**',
      '.bench-dist/**',
      '.example-dist/**',
      'compat/**',
      'test/types/.snippets-*/**',
    ],
  },
  { linterOptions: { reportUnusedDisableDirectives: 'error' } },
  js.configs.recommended,
  ...tseslint.configs.recommendedTypeChecked,
  importX.flatConfigs.recommended,
  importX.flatConfigs.typescript,
  {
    languageOptions: {
      globals: { ...globals.node },
      parserOptions: {
        projectService: true,
        tsconfigRootDir: import.meta.dirname,
      },
    },
    settings: {
      // The package's own name (the consumer type tests) is internal whether or not dist/ is built yet;
      // otherwise its import group changes with the build and import-x/order flip-flops.
      'import-x/internal-regex': '^nestjs-redis-infra(/|$)',
      // For import-x/no-cycle: `./x.js` in a .ts file is ./x.ts, as TypeScript resolves it.
      'import-x/resolver-next': [
        createNodeResolver({
          extensions: ['.ts', '.mts', '.d.ts', '.d.mts', '.js', '.mjs', '.json'],
          extensionAlias: { '.js': ['.ts', '.js'], '.mjs': ['.mts', '.d.mts', '.mjs'] },
          conditionNames: ['types', 'import', 'node', 'default'],
        }),
      ],
    },
    rules: {
      // Type-only imports are erased; with emitDecoratorMetadata the rule keeps the imports that
      // decorated constructors need at run time as value imports.
      '@typescript-eslint/consistent-type-imports': [
        'error',
        { prefer: 'type-imports', fixStyle: 'inline-type-imports' },
      ],
      '@typescript-eslint/no-unused-vars': [
        'error',
        { argsIgnorePattern: '^_', varsIgnorePattern: '^_', caughtErrorsIgnorePattern: '^_' },
      ],
      'import-x/order': [
        'error',
        {
          groups: ['builtin', 'external', 'internal', 'parent', 'sibling', 'index'],
          'newlines-between': 'always',
          alphabetize: { order: 'asc', caseInsensitive: true },
        },
      ],
      'import-x/no-duplicates': 'error',
      // TypeScript resolves every import already (tsc runs first in npm test).
      'import-x/no-unresolved': 'off',
      'import-x/named': 'off',
      'import-x/namespace': 'off',
      'import-x/default': 'off',
      'import-x/no-named-as-default-member': 'off',
      // Forwarding a caught reason unchanged (`(err: unknown) => reject(err)`) is correct; the rule
      // still reports literal non-Error rejections.
      '@typescript-eslint/prefer-promise-reject-errors': [
        'error',
        { allowThrowingAny: true, allowThrowingUnknown: true },
      ],
      // Permit and ReadLock are named Lease subtypes of the public API (documented roles).
      '@typescript-eslint/no-empty-object-type': [
        'error',
        { allowInterfaces: 'with-single-extends' },
      ],
    },
  },
  {
    // Import circles matter in the package itself. Following every import of every test and bench
    // file into node_modules cost half of the lint pass (27 of 60 s) and found nothing src/ would not.
    files: ['src/**/*.ts'],
    rules: { 'import-x/no-cycle': ['error', { ignoreExternal: true }] },
  },
  {
    // Test doubles, loaders and closers implement promise-returning contracts
    // (`() => Promise<T>`, `close(): Promise<void>`); `async` is the plainest way to write them.
    files: ['test/**/*.ts', 'bench/**/*.ts'],
    rules: {
      '@typescript-eslint/require-await': 'off',
      // Callback-to-promise adapters do `err ? reject(err) : resolve()`: the truthiness check narrows
      // `err` to `{}`, which this rule rejects, while no-unnecessary-type-assertion rejects `as Error`.
      '@typescript-eslint/prefer-promise-reject-errors': 'off',
    },
  },
  {
    // The consumer type tests import the package by name, which resolves to dist/ (built by npm
    // test before tsc checks them); linted before a build, every import is `any`. tsc is their gate.
    files: ['test/types/**/*.ts'],
    rules: {
      '@typescript-eslint/no-unsafe-assignment': 'off',
      '@typescript-eslint/no-unsafe-call': 'off',
      '@typescript-eslint/no-unsafe-member-access': 'off',
      '@typescript-eslint/no-unsafe-return': 'off',
      '@typescript-eslint/no-unsafe-argument': 'off',
      '@typescript-eslint/no-redundant-type-constituents': 'off',
    },
  },
  {
    files: ['**/*.mjs', '**/*.js'],
    ...tseslint.configs.disableTypeChecked,
  },
);
