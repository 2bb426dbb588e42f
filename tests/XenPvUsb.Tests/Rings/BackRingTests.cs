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
        usbif_urb_request req = back.CopyNextRequest();
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
        back.CopyNextRequest();
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
        usbif_urb_request copy = back.CopyNextRequest();
        *(ushort*)(_page + RingIndex.HeaderSize + 2) = 999; // the guest rewrites nr_buffer_segs
        Assert.That(copy.nr_buffer_segs, Is.EqualTo(1));
    }
}
