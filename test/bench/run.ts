/** What the benchmark scripts share: the bundler's quiet logger and running `main` as the process. */
const noop = () => undefined;
export const quietLogger = { trace: noop, debug: noop, info: noop, warn: noop, error: console.error, log: noop };

/** Exits 0 when `main` resolves, 1 with the error printed when it rejects (a benchmark's servers must not keep it alive). */
export const runBench = (main: () => Promise<void>): void => {
  main().then(
    () => process.exit(0),
    (err) => {
      console.error(err);
      process.exit(1);
    },
  );
};
