import type { ChannelCredentials } from "@grpc/grpc-js";
import { describe, expectTypeOf, it } from "vitest";
import type * as sdk from "./index.js";
import type * as k8s from "./kubernetes.js";

/*
 * The public surface must not degrade to `any`: a property, parameter or
 * result typed `any` anywhere in it fails the typecheck of this file (part of
 * `npm test`). External types are leaves (their own typings are theirs).
 */
type IsAny<T> = 0 extends 1 & T ? true : false;
type Leaf = Date | AbortSignal | ChannelCredentials | Uint8Array | Error;
type Step = [1, 2, 3, 4, 5, 6, 7];
type HasAny<T, D extends number = 0> =
  IsAny<T> extends true
    ? true
    : D extends 6
      ? false
      : T extends Leaf
        ? false
        : // An async iterable's own methods take `any` (lib typings): what it yields is what counts.
          T extends AsyncIterable<infer Y>
          ? HasAny<Y, Step[D]>
          : T extends (...args: infer A) => infer R
            ? true extends HasAny<A[number], Step[D]> | HasAny<Awaited<R>, Step[D]>
              ? true
              : false
            : T extends object
              ? true extends { [K in keyof T]-?: HasAny<T[K], Step[D]> }[keyof T]
                ? true
                : false
              : false;

describe("public types", () => {
  it("the any-detector itself finds an any wherever it hides", () => {
    expectTypeOf<HasAny<{ a: { b: unknown[] } }>>().toEqualTypeOf<false>();
    // biome-ignore lint/suspicious/noExplicitAny: the detector's own check
    expectTypeOf<HasAny<{ a: { b: any[] } }>>().toEqualTypeOf<true>();
    // biome-ignore lint/suspicious/noExplicitAny: the detector's own check
    expectTypeOf<HasAny<{ f(x: string): Promise<{ y: any }> }>>().toEqualTypeOf<true>();
  });

  it("no any in the client, its requests, results, events and errors", () => {
    expectTypeOf<HasAny<sdk.KeelsonClient>>().toEqualTypeOf<false>();
    expectTypeOf<HasAny<sdk.ClientOptions>>().toEqualTypeOf<false>();
    expectTypeOf<HasAny<sdk.KeelsonError>>().toEqualTypeOf<false>();
    expectTypeOf<HasAny<sdk.KeelsonEvent>>().toEqualTypeOf<false>();
    expectTypeOf<HasAny<sdk.Volume | sdk.Snapshot | sdk.Attachment | sdk.AttachmentRecord>>().toEqualTypeOf<false>();
    expectTypeOf<HasAny<sdk.NodeInfo | sdk.ClusterNode | sdk.QosPolicy | sdk.QosStatus>>().toEqualTypeOf<false>();
    expectTypeOf<HasAny<typeof sdk.createClient>>().toEqualTypeOf<false>();
    expectTypeOf<HasAny<typeof sdk.isKeelsonError>>().toEqualTypeOf<false>();
    expectTypeOf<
      HasAny<k8s.CreatePvcRequest | k8s.SnapshotPvcRequest | k8s.ExpandPvcRequest | k8s.VolumeSnapshot>
    >().toEqualTypeOf<false>();
    expectTypeOf<ReturnType<typeof k8s.snapshotPvc>>().toEqualTypeOf<Promise<k8s.VolumeSnapshot>>();
    // Results are what the docs say, not widened.
    expectTypeOf<ReturnType<sdk.KeelsonClient["getVolume"]>>().toEqualTypeOf<Promise<sdk.Volume>>();
    expectTypeOf<sdk.ErrorCode>().toEqualTypeOf<keyof typeof sdk.ERROR_CODES>();
  });
});
