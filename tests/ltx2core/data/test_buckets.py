import pytest

from ltx2core.data.buckets import BucketSpec, plan_bucket, same_aspect
from ltx2core.models.scale import LTX2


def spec(**kw) -> BucketSpec:
    base = dict(strategy="aspect_ratio", resolution=512, resolution_type="pixel", num_frames=121, max_frames=None,
                frame_interval=8, frame_rate=25.0)
    return BucketSpec(**(base | kw))


@pytest.mark.parametrize(("size", "expected"), [((1920, 1080), (896, 512)), ((1080, 1920), (512, 896)),
                                                ((640, 480), (672, 512)), ((500, 500), (512, 512))])
def test_aspect_ratio_scales_the_short_edge_to_the_resolution(size, expected):
    plan = plan_bucket(*size, frames_at_rate=300, spec=spec())
    assert (plan.width, plan.height) == expected
    assert plan.bucket == f"{expected[0]}x{expected[1]}@121"
    assert plan.num_frames == 121


@pytest.mark.parametrize("size", [(1920, 1080), (1279, 719), (333, 777), (64, 48), (4096, 2160)])
@pytest.mark.parametrize("rtype", ["pixel", "pixel_area"])
def test_every_bucket_is_a_valid_ltx2_shape_and_the_crop_fits(size, rtype):
    plan = plan_bucket(*size, frames_at_rate=97, spec=spec(resolution_type=rtype, strategy="resolution_frames"))
    assert LTX2.size_ok(plan.width) and LTX2.size_ok(plan.height)
    assert LTX2.frames_ok(plan.num_frames)
    assert plan.resize_width >= plan.width and plan.resize_height >= plan.height
    assert plan.crop_left + plan.width <= plan.resize_width and plan.crop_top + plan.height <= plan.resize_height
    # the resize keeps the aspect (to within the rounding of one pixel)
    assert abs(plan.resize_width / plan.resize_height - size[0] / size[1]) < 2 / min(plan.resize_height, 64) + 0.02


def test_pixel_area_keeps_the_area_near_resolution_squared():
    plan = plan_bucket(1920, 1080, frames_at_rate=121, spec=spec(resolution_type="pixel_area"))
    assert abs(plan.width * plan.height - 512 * 512) / (512 * 512) < 0.1


@pytest.mark.parametrize(("frames", "max_frames", "interval", "expected"),
                         [(130, None, 8, 129), (129, None, 8, 129), (100, None, 16, 97), (300, 241, 8, 241),
                          (60, None, 8, 57)])
def test_resolution_frames_floors_length_to_the_interval_grid(frames, max_frames, interval, expected):
    plan = plan_bucket(640, 360, frames_at_rate=frames,
                       spec=spec(strategy="resolution_frames", max_frames=max_frames, frame_interval=interval))
    assert plan.num_frames == expected
    assert plan.bucket.endswith(f"@{expected}")


def test_centre_crop_of_a_wide_clip():
    plan = plan_bucket(1920, 800, frames_at_rate=121, spec=spec())
    # short edge 800 -> 512: 1228.8 wide, rounded to 1216 for the bucket; the resize covers it, crop centred
    assert (plan.width, plan.height) == (1216, 512)
    assert (plan.resize_width, plan.resize_height) == (1229, 512)
    assert plan.crop_left == (1229 - 1216) // 2 and plan.crop_top == 0


@pytest.mark.parametrize(("a", "b", "same"), [
    ((1920, 1080), (1920, 1080), True),
    ((1920, 1080), (1920, 1088), True),  # an encoder's 16-line padding
    ((1920, 1080), (1280, 720), True),
    ((1920, 1080), (683, 384), True),  # the clip's cover of a 384 bucket: a pixel of rounding
    ((1920, 1080), (1440, 1080), False),  # 16:9 against 4:3
    ((128, 128), (192, 128), False),
])
def test_same_aspect_allows_rounding_not_another_shape(a, b, same):
    assert same_aspect(*a, *b) is same and same_aspect(*b, *a) is same
