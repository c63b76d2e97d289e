// meteorpi: new events appear at the top of the index page as they are imported.
// Follows /feed/stream (Server-Sent Events) from the cursor the page was rendered at, so nothing
// committed in between is missed; every value is set as text, never parsed as markup.
(function () {
  "use strict";
  var list = document.getElementById("latest-events");
  var status = document.getElementById("live-status");
  if (!list || !status || !window.EventSource) { return; }

  function say(text, withReload) {
    status.textContent = text;
    if (withReload) {
      var link = document.createElement("a");
      link.href = "/";
      link.textContent = "Reload";
      status.appendChild(document.createTextNode(" "));
      status.appendChild(link);
    }
  }

  function utc(ms) {
    return new Date(ms).toISOString().replace("T", " ").replace(/\.\d+Z$/, " UTC");
  }

  function add(item) {
    if (!/^[0-9a-f]{32}$/.test(item.id) || document.getElementById("event-" + item.id)) { return; }
    var li = document.createElement("li");
    li.id = "event-" + item.id;
    li.className = "new";
    var time = document.createElement("time");
    time.dateTime = new Date(item.time).toISOString();
    time.textContent = utc(item.time);
    var link = document.createElement("a");
    link.href = "/events/" + item.id;
    link.textContent = item.event_type || "event";
    var camera = document.createElement("span");
    camera.className = "camera";
    camera.textContent = item.camera_id;
    li.appendChild(time);
    li.appendChild(document.createTextNode(" "));
    li.appendChild(link);
    li.appendChild(document.createTextNode(" "));
    li.appendChild(camera);
    list.insertBefore(li, list.firstChild);
    var empty = document.getElementById("no-events");
    if (empty) { empty.remove(); }
    var max = parseInt(list.getAttribute("data-max"), 10) || 30;
    while (list.children.length > max) { list.removeChild(list.lastChild); }
  }

  var source = new EventSource(list.getAttribute("data-feed-url"));
  source.addEventListener("up-to-date", function () {
    list.setAttribute("data-live", "on");
    say("Live: new events appear at the top as they arrive.", false);
  });
  source.addEventListener("must-refetch", function () {
    source.close();
    list.setAttribute("data-live", "off");
    say("The live feed lost its place (too much arrived at once, or the archive was restored).", true);
  });
  source.onmessage = function (message) {
    var item;
    try { item = JSON.parse(message.data); } catch (e) { return; }
    if (item.kind === "event" && item.op === "added") { add(item); }
  };
  source.onerror = function () {
    list.setAttribute("data-live", "off");
    say("The live feed is interrupted; retrying.", true);
  };
}());
