// The portal's icon form: the chosen file travels as a data URI, as the API takes it.
function readIcon(input) {
  const file = input.files[0];
  const upload = document.getElementById("icon-upload");
  upload.disabled = true;
  if (!file) return;
  const reader = new FileReader();
  reader.onload = () => {
    document.getElementById("icon-data").value = reader.result;
    upload.disabled = false;
  };
  reader.readAsDataURL(file);
}

document.addEventListener("change", (event) => {
  if (event.target.id === "icon-file") readIcon(event.target);
});

// A file chosen before this script ran (a slow page) has fired its change event already.
const chosenIcon = document.getElementById("icon-file");
if (chosenIcon && chosenIcon.files.length) readIcon(chosenIcon);
