/** Failure type of an activity asked to read or write an object outside the tenant's storage scope. */
export const StorageFailures = {
  outOfScope: 'OutOfStorageScope',
} as const;
