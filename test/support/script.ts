/** What the scripts outside jest (benchmarks, the history recorder) share: a quiet bundler logger and running `main` as the process. */
const noop = () => undefined;
export const quietLogger = { trace: noop, debug: noop, info: noop, warn: noop, error: console.error, log: noop };

/** Exits 0 when `main` resolves, 1 with the error printed when it rejects (a script's servers must not keep it alive). */
export const runScript = (main: () => Promise<void>): void => {
  main().then(
    () => process.exit(0),
    (err) => {
      console.error(err);
      process.exit(1);
    },
  );
};
