// Difference heatmap of two frames, one invocation per pixel. Frames arrive as packed RGBA8
// words; the map is the mean absolute channel difference, amplified 3x and coloured
// black -> red -> yellow -> white. Must match `viz::difference_heatmap` (the CPU path).

struct Params {
    pixels: u32,
};

@group(0) @binding(0) var<storage, read> frame_a: array<u32>;
@group(0) @binding(1) var<storage, read> frame_b: array<u32>;
@group(0) @binding(2) var<storage, read_write> heatmap: array<u32>;
@group(0) @binding(3) var<uniform> params: Params;

fn unpack(word: u32) -> vec3<f32> {
    return vec3<f32>(
        f32(word & 0xffu),
        f32((word >> 8u) & 0xffu),
        f32((word >> 16u) & 0xffu),
    );
}

fn channel(t: f32, start: f32) -> u32 {
    return u32(round(clamp(t - start, 0.0, 1.0) * 255.0));
}

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) id: vec3<u32>) {
    let i = id.x;
    if (i >= params.pixels) {
        return;
    }
    let d = abs(unpack(frame_a[i]) - unpack(frame_b[i]));
    let t = clamp((d.x + d.y + d.z) / (3.0 * 255.0) * 3.0, 0.0, 1.0) * 3.0;
    heatmap[i] = channel(t, 0.0) | (channel(t, 1.0) << 8u) | (channel(t, 2.0) << 16u) | (255u << 24u);
}
