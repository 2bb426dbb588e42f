using System.Runtime.InteropServices;
using global::XenPvUsb.Usbif;
using XenPvUsb.Rings;

namespace XenPvUsb.Tests.Rings;

[TestFixture]
public sealed unsafe class BackRingTests
{
    private nint _page;

    [SetUp]
    public void AllocPage() => _page = (nint)NativeMemory.AlignedAlloc(4096, 4096);

    [TearDown]
    public void FreePage() => NativeMemory.AlignedFree((void*)_page);

    [Test]
    public void RequestsAndResponses_FlowBetweenFrontAndBack()
    {
        var front = new FrontRing<usbif_urb_request, usbif_urb_response>(_page);
        var back = new BackRing<usbif_urb_request, usbif_urb_response>(_page);
        front.PutRequest(new usbif_urb_request { id = 7, buffer_length = 512 });
        Assert.That(front.PushRequestsAndCheckNotify(), Is.True, "req_event starts at 1");
        Assert.That(back.TryReadRequestProd(out uint prod), Is.True);
        Assert.That(prod, Is.EqualTo(1));
        Assert.That(back.TryCopyNextRequest(out usbif_urb_request req), Is.True);
        Assert.That(req.id, Is.EqualTo(7));
        Assert.That(req.buffer_length, Is.EqualTo(512));
        Assert.That(back.FinalCheckForRequests(), Is.False);
        back.PutResponse(new usbif_urb_response { id = 7, actual_length = 512 });
        Assert.That(back.PushResponsesAndCheckNotify(), Is.True);
        Assert.That(front.TryReadResponseProd(out uint rp), Is.True);
        Assert.That(rp, Is.EqualTo(1));
        Assert.That(front.CopyNextResponse().actual_length, Is.EqualTo(512));
    }

    [Test]
    public void FinalCheck_AsksForTheNextRequest()
    {
        var front = new FrontRing<usbif_urb_request, usbif_urb_response>(_page);
        var back = new BackRing<usbif_urb_request, usbif_urb_response>(_page);
        front.PutRequest(default);
        front.PushRequestsAndCheckNotify();
        back.TryReadRequestProd(out _);
        back.TryCopyNextRequest(out _);
        Assert.That(back.FinalCheckForRequests(), Is.False);
        front.PutRequest(default);
        Assert.That(front.PushRequestsAndCheckNotify(), Is.True, "req_event = req_cons + 1 makes the next push notify");
        front.PutRequest(default);
        Assert.That(front.PushRequestsAndCheckNotify(), Is.False, "no second notification until the backend asks again");
        Assert.That(back.FinalCheckForRequests(), Is.True);
    }

    [Test]
    public void BogusProducer_IsDetected()
    {
        var front = new FrontRing<usbif_urb_request, usbif_urb_response>(_page);
        var back = new BackRing<usbif_urb_request, usbif_urb_response>(_page);
        front.ForceRequestProd(17);
        Assert.That(back.TryReadRequestProd(out _), Is.False);
        front.ForceRequestProd(16);
        Assert.That(back.TryReadRequestProd(out _), Is.True);
    }

    [Test]
    public void CopiedRequest_IsNotAffectedByLaterWritesToTheSharedPage()
    {
        var front = new FrontRing<usbif_urb_request, usbif_urb_response>(_page);
        var back = new BackRing<usbif_urb_request, usbif_urb_response>(_page);
        front.PutRequest(new usbif_urb_request { id = 1, nr_buffer_segs = 1 });
        front.PushRequestsAndCheckNotify();
        back.TryReadRequestProd(out _);
        back.TryCopyNextRequest(out usbif_urb_request copy);
        *(ushort*)(_page + RingIndex.HeaderSize + 2) = 999; // the guest rewrites nr_buffer_segs
        Assert.That(copy.nr_buffer_segs, Is.EqualTo(1));
    }

    /// <summary>Consumes <paramref name="n"/> requests and answers <paramref name="answered"/> of them.</summary>
    private static void Consume(ref BackRing<usbif_urb_request, usbif_urb_response> back, int n, int answered)
    {
        for (int i = 0; i < n; i++)
        {
            Assert.That(back.TryCopyNextRequest(out _), Is.True);
        }
        for (int i = 0; i < answered; i++)
        {
            back.PutResponse(default);
        }
    }

    [TestCase(0u, true, TestName = "ReqProd_NothingNew_IsValid")]
    [TestCase(1u, true, TestName = "ReqProd_OneNew_IsValid")]
    [TestCase(15u, true, TestName = "ReqProd_FillsTheFreeSlots_IsValid")]
    [TestCase(16u, false, TestName = "ReqProd_OneMoreThanFree_IsRefused")]
    [TestCase(0xFFFF_FFFFu, false, TestName = "ReqProd_OneBehindReqCons_IsRefused")]
    [TestCase(0x8000_0000u, false, TestName = "ReqProd_HalfTheIndexSpaceAhead_IsRefused")]
    [TestCase(0xFFFF_FFF0u, false, TestName = "ReqProd_SixteenBehind_IsRefused")]
    public void ReqProd_WithOneRequestInFlight(uint aheadOfReqCons, bool valid)
    {
        // Item 1 of issue 8: with one URB in flight, a req_prod one behind req_cons passed the plain
        // RING_REQUEST_PROD_OVERFLOW test (prod - rsp_prod_pvt = 0) and the copy loop ran on and on.
        var front = new FrontRing<usbif_urb_request, usbif_urb_response>(_page);
        var back = new BackRing<usbif_urb_request, usbif_urb_response>(_page);
        for (int i = 0; i < 5; i++)
        {
            front.PutRequest(default);
        }
        front.PushRequestsAndCheckNotify();
        back.TryReadRequestProd(out _);
        Consume(ref back, 5, 4);
        front.ForceRequestProd(back.ReqCons + aheadOfReqCons);
        Assert.That(back.TryReadRequestProd(out _), Is.EqualTo(valid));
    }

    [Test]
    public void ReqProd_AcrossTheIndexWrap_IsValid()
    {
        // Free-running indexes just below 2^32, as on a ring that has lived long.
        const uint Start = 0xFFFF_FFF8u;
        var front = new FrontRing<usbif_urb_request, usbif_urb_response>(_page, startIndex: Start);
        var back = new BackRing<usbif_urb_request, usbif_urb_response>(_page, reqCons: Start, rspProdPvt: Start);
        for (int i = 0; i < 16; i++)
        {
            front.PutRequest(default);
        }
        front.PushRequestsAndCheckNotify();
        Assert.That(back.TryReadRequestProd(out uint prod), Is.True);
        Assert.That(prod, Is.EqualTo(unchecked(Start + 16)));
        Consume(ref back, 16, 16);
        Assert.That(back.ReqCons, Is.EqualTo(8u));
        front.ForceRequestProd(Start);
        Assert.That(back.TryReadRequestProd(out _), Is.False, "back across the wrap");
    }

    [Test]
    public void CopyNextRequest_RefusesToOverrunUnansweredRequests()
    {
        var front = new FrontRing<usbif_urb_request, usbif_urb_response>(_page);
        var back = new BackRing<usbif_urb_request, usbif_urb_response>(_page);
        Consume(ref back, 16, 0);
        Assert.That(back.TryCopyNextRequest(out _), Is.False, "16 requests wait for responses: a 17th has no slot");
        back.PutResponse(default);
        Assert.That(back.TryCopyNextRequest(out _), Is.True);
    }
}
